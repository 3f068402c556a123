"""Which alerts the residence rules want open for a person: a table."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.alerting import AlertRule, PersonFacts, Severity, wanted_alerts

BUILDING = "B-7"
DISTRICTS = ["杭州市上城区", "杭州市西湖区"]
OUTSIDE = "安徽省合肥市蜀山区长江西路2号"
LOCAL = "浙江省杭州市西湖区文三路1号"
DAY1 = date(2026, 2, 27)


def facts(**changes: object) -> PersonFacts:
    base: dict[str, object] = {
        "first_seen_on": DAY1,
        "registration_state": None,
        "registered_building": None,
        "moved_out_on": None,
        "household_address": OUTSIDE,
        "permit_issued_on": None,
        "permit_endorsed_on": (),
    }
    base.update(changes)
    return PersonFacts(**base)  # type: ignore[arg-type]


def rules(person: PersonFacts, today: date) -> list[tuple[str, str, date | None]]:
    return [
        (alert.rule.value, alert.severity.value, alert.deadline)
        for alert in wanted_alerts(
            person, building=BUILDING, local_districts=DISTRICTS, today=today
        )
    ]


D = timedelta(days=1)


@pytest.mark.parametrize(
    ("person", "today", "expected"),
    [
        (facts(), DAY1, [("registration.due", "notice", DAY1 + 2 * D)]),
        (facts(), DAY1 + 2 * D, [("registration.due", "notice", DAY1 + 2 * D)]),
        (facts(), DAY1 + 3 * D, [("registration.overdue", "alarm", DAY1 + 2 * D)]),
        (facts(household_address=LOCAL), DAY1 + 30 * D, []),
        (
            facts(household_address=None),
            DAY1 + 3 * D,
            [("registration.overdue", "alarm", DAY1 + 2 * D)],
        ),
        (facts(first_seen_on=None), DAY1, []),
        (
            facts(registration_state="registered", registered_building=BUILDING),
            DAY1 + 30 * D,
            [],
        ),
        (
            facts(registration_state="registered", registered_building="B-1"),
            DAY1 + 9 * D,
            [("registration.change_due", "notice", DAY1 + 9 * D)],
        ),
        (
            facts(registration_state="registered", registered_building="B-1"),
            DAY1 + 10 * D,
            [("registration.change_overdue", "alarm", DAY1 + 9 * D)],
        ),
        (facts(registration_state="moved_out"), DAY1 + 30 * D, []),
        (facts(moved_out_on=DAY1 + D), DAY1 + 30 * D, []),
        (
            facts(moved_out_on=DAY1 - 10 * D),
            DAY1 + 3 * D,
            [("registration.overdue", "alarm", DAY1 + 2 * D)],
        ),
        (
            facts(
                registration_state="registered",
                registered_building=BUILDING,
                permit_issued_on=date(2025, 3, 10),
            ),
            date(2026, 2, 10),
            [("permit.endorsement_due", "notice", date(2026, 3, 10))],
        ),
        (
            facts(
                registration_state="registered",
                registered_building=BUILDING,
                permit_issued_on=date(2025, 3, 10),
            ),
            date(2026, 2, 9),
            [],
        ),
        (
            facts(
                registration_state="registered",
                registered_building=BUILDING,
                permit_issued_on=date(2025, 3, 10),
            ),
            date(2026, 3, 11),
            [("permit.suspended", "alarm", date(2026, 3, 10))],
        ),
        (
            facts(
                registration_state="registered",
                registered_building=BUILDING,
                permit_issued_on=date(2025, 3, 10),
                permit_endorsed_on=(date(2026, 3, 1),),
            ),
            date(2026, 3, 11),
            [],
        ),
    ],
)
def test_wanted_alerts(person: PersonFacts, today: date, expected: list[object]) -> None:
    assert rules(person, today) == expected


def test_unknown_household_address_says_how_to_settle_it() -> None:
    (alert,) = wanted_alerts(
        facts(household_address=None), building=BUILDING, local_districts=DISTRICTS, today=DAY1
    )
    assert alert.rule is AlertRule.REGISTRATION_DUE
    assert "read the ID card" in alert.action


@given(days=st.integers(min_value=0, max_value=800))
def test_a_registered_local_never_has_a_registration_alert(days: int) -> None:
    person = facts(household_address=LOCAL)
    assert rules(person, DAY1 + days * D) == []


@given(days=st.integers(min_value=3, max_value=800))
def test_an_unregistered_outsider_stays_overdue_until_something_changes(days: int) -> None:
    wanted = wanted_alerts(
        facts(), building=BUILDING, local_districts=DISTRICTS, today=DAY1 + days * D
    )
    assert [(a.rule, a.severity) for a in wanted] == [
        (AlertRule.REGISTRATION_OVERDUE, Severity.ALARM)
    ]
