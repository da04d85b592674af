"""Fuzz the gateway's OpenAPI schema with schemathesis (bounded examples): never a 5xx."""

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.gateway_fixtures import RunningGateway, tenants

EXAMPLES = 40


def test_schema_fuzzing_finds_no_server_errors(gateway_server: RunningGateway) -> None:
    import httpx

    openapi = httpx.get(f"{gateway_server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(openapi)
    # a project of its own: hundreds of requests a minute must not spend the rate limits of
    # the project the session's other tests use
    _, key, _, _ = tenants(gateway_server.gateway, ["tiny", "math-lora"])
    auth = {"Authorization": f"Bearer {key}"}
    # the Studio's routes need Dagster's webserver, which this project does not run: they are
    # fuzzed against a recording one in tests/studio/test_studio_api.py
    operations = [result.ok() for result in schema.get_all_operations()
                  if not result.ok().path.startswith("/studio")]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings",
        "GET /v1/models"}
    seen: dict[int, int] = {}
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=gateway_server.url, headers=auth, timeout=60)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.path, case.body,
                                                response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) >= {"message", "type", "code"}

        run()
    assert sum(seen.values()) >= len(operations)
