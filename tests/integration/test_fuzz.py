"""Issue 5: a property-based fuzz run of the whole API from its own OpenAPI document
(schemathesis), against the session sandbox's daemon. Bounded: a few examples per
operation, so the run takes seconds to a few minutes. Every answer must be documented
(status, content type, body schema, headers) and none may be a 5xx.

The fuzzer works inside a fresh sub-account, so whatever it creates stays out of the
other tests' way.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

pytestmark = pytest.mark.stack

MAX_EXAMPLES = 6

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_token(sandbox: Any) -> str:
    info = sandbox.info
    r = requests.post(f"{info['api_url']}/v1/reseller/accounts", timeout=10,
                      headers={"Authorization": f"Bearer {info['admin_token']}"},
                      json={"email": f"fuzz-{secrets.token_hex(3)}@customers.example",
                            "domain_limit": 50, "email_user_limit": 200, "reseller": True})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_api_answers_match_its_document(fuzz_token: str, sandbox: Any) -> None:
    # schemathesis's lazy pytest loader does not support pytest 9 yet, so the operations
    # are walked here, each with its own bounded Hypothesis run.
    base = sandbox.info["api_url"]
    schema = schemathesis.openapi.from_url(base + "/v1/openapi.json")
    auth = {"Authorization": f"Bearer {fuzz_token}"}
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base, headers=auth, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
        ran += 1
    assert ran >= 10, "the document lists too few operations"
    assert not failures, "\n\n".join(failures)
