"""The web UI's two languages: same keys, every word a template asks for exists in both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.api import i18n

TEMPLATES = Path(i18n.__file__).parent / "templates"


def test_both_languages_have_the_same_words() -> None:
    assert set(i18n.ZH) == set(i18n.EN)
    assert all(value.strip() for value in (*i18n.ZH.values(), *i18n.EN.values()))


def test_every_literal_key_the_templates_use_is_translated() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""_\(["']([\w.]+)["']\)""", template.read_text("utf-8")))
    assert used, "the templates use the translator"
    assert used - set(i18n.ZH) == set()


def test_composed_keys_are_translated() -> None:
    """Keys the templates build from values (`"reg." ~ state` and the like)."""
    from gateway.domain.alerting import AlertRule
    from gateway.domain.credentials import CredentialStatus
    from gateway.domain.events import EventType
    from gateway.domain.registration import RegistrationState
    from gateway.domain.rules import PermitState

    composed = (
        [f"reg.{state.value}" for state in RegistrationState]
        + [f"permit.{state.value}" for state in PermitState]
        + [f"card.{status.value}" for status in CredentialStatus]
        + [f"rule.{rule.value}" for rule in AlertRule]
        + [f"todo.{rule.value}" for rule in AlertRule]
        + [f"event.{kind.value}" for kind in EventType]
        + ["record_kind.registration", "record_kind.change", "record_kind.departure"]
        + ["report_lost", "unblock", "return", "cancel", "allow", "deny"]
    )
    assert [key for key in composed if key not in i18n.ZH] == []


@pytest.mark.parametrize(
    ("cookie", "accept", "chosen"),
    [
        (None, None, "zh-CN"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "zh-TW,zh;q=0.9", "zh-CN"),
        (None, "fr-FR,en;q=0.5", "en"),
        ("en", "zh-CN", "en"),
        ("klingon", "zh-CN", "zh-CN"),
    ],
)
def test_the_language_is_the_switchs_then_the_browsers_then_chinese(
    cookie: str | None, accept: str | None, chosen: str
) -> None:
    assert i18n.choose(cookie, accept) == chosen
