"""schemathesis against the gateway's OpenAPI document, over HTTPS on loopback, as an admin.

The document itself is read with the admin's session (anonymous callers get
401). Property-based requests for every documented operation: no 5xx, and every
response's status, content type and body match what the document promises.
The live event stream is left out (it never ends by design; the browser and
authorization tests cover it), and so is logout (it would end the session the
run uses).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.web import PASSWORD, WebGateway

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def admin_session(web: WebGateway) -> dict[str, Any]:
    with web.anonymous() as client:
        reply = client.post("/api/v1/login", json={"name": "admin", "password": PASSWORD})
        assert reply.status_code == 200
        return {
            "cookies": {"rentgate_session": reply.cookies["rentgate_session"]},
            "headers": {"X-CSRF-Token": reply.json()["csrf_token"]},
        }


@pytest.fixture(scope="module")
def api_schema(web: WebGateway, admin_session: dict[str, Any]) -> Any:
    """The document, read with the admin's session (it is not public)."""
    schema = schemathesis.openapi.from_url(
        f"{web.url}/api/openapi.json",
        verify=str(web.gateway.api_certificate),
        cookies=admin_session["cookies"],
    )
    return schema.exclude(path="/api/v1/events/stream").exclude(path="/api/v1/logout")


def test_the_api_keeps_its_promises(
    api_schema: Any, web: WebGateway, admin_session: dict[str, Any]
) -> None:
    """Each operation in turn (schemathesis' pytest plugin does not load under this pytest)."""
    failures: dict[str, str] = {}
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=web.url,
                headers=admin_session["headers"],
                cookies=admin_session["cookies"],
                verify=str(web.gateway.api_certificate),
                timeout=30,
                checks=CHECKS,
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # try all, report all
            failures[operation.label] = str(exc)[:2000]
    assert operations >= 15
    assert failures == {}, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
