"""Schema-based fuzzing of the REST API from its own OpenAPI document (schemathesis).

A real gateway process serves ``/openapi.json``; every operation gets generated requests,
valid and not, with a user's token (the operator API with the operator's). Whatever comes
in, the gateway answers a typed 4xx (or the success the document promises), never a 5xx
and never a traceback.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.core.result import Ok

from tests.support.gateways import OPERATOR_TOKEN, GatewayCluster
from tests.support.nats_server import NatsServer


@pytest.fixture(scope="module")
def fuzzed_gateway(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(nats_server.url, count=1).start()
    yield gateways
    gateways.stop()


def _check(case: Case[Any], gateway: GatewayCluster, user_token: str) -> None:
    path = case.operation.path
    token = OPERATOR_TOKEN if path.startswith("/api/admin") else user_token
    response = case.call(
        base_url=gateway.urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    status = response.status_code
    assert "Traceback" not in response.text
    if status == 503:  # history without MongoDB in this test: a typed, documented refusal
        assert response.json()["error"]["code"] == "unavailable", response.text
        return
    assert status < 500, (case.method, path, status, response.text)
    if status >= 400 and "application/json" in str(response.headers.get("content-type", "")):
        assert "code" in response.json()["error"], response.text


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_no_request_makes_the_gateway_fail(fuzzed_gateway: GatewayCluster) -> None:
    # Loaded from the running gateway (schemathesis' pytest loader predates this pytest).
    schema = schemathesis.openapi.from_url(f"{fuzzed_gateway.urls[0]}/openapi.json")
    user_token = fuzzed_gateway.token("fuzzer")
    results = list(schema.get_all_operations())
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) == len(results) >= 10, "the OpenAPI document has invalid operations"
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Case[Any]) -> None:
            nonlocal calls
            calls += 1
            _check(case, fuzzed_gateway, user_token)

        fuzz()
    assert calls >= 5 * len(operations)
