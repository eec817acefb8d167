"""The API fuzzed from its own OpenAPI schema (schemathesis, in-process ASGI): every operation,
with and without the token, never answers 5xx and answers as its schema says."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from mendflow.server.app import create_app
from mendflow.server.catalog import Catalog
from mendflow.server.control import Control
from mendflow.state.store import StateStore
from tests.test_control import Served, open_breaker, open_incident, served

TOKEN = "fuzz-token"
CHECKS = [not_a_server_error, response_schema_conformance]
#: Bounded so the whole file stays well under a minute; derandomized, so it is reproducible.
FUZZ = settings(
    max_examples=12, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A populated served folder (a run, dead letters, an incident, an open breaker)."""
    setup = served(tmp_path_factory.mktemp("fuzz"))
    open_incident(setup.control)
    open_breaker(setup.store, "orders-api")
    yield setup
    setup.store.close()


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, read from the schema of an app over an empty store."""
    store = StateStore("sqlite://")
    try:
        spec = create_app(Control(store, Catalog()), token=None).openapi()
    finally:
        store.close()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Served) -> Any:
    """The app's OpenAPI schema, its calls made in process against the app over ``fuzzed``."""
    return schemathesis.openapi.from_asgi("/openapi.json",
                                          create_app(fuzzed.control, token=TOKEN))


def _fuzz(api_schema: Any, method: str, path: str, check: Callable[[Any], None]) -> None:
    """Run ``check`` on valid and invalid cases generated for the operation."""
    operation = api_schema[path][method]
    cases = (operation.as_strategy(GenerationMode.POSITIVE)
             | operation.as_strategy(GenerationMode.NEGATIVE))

    @FUZZ
    @given(case=cases)
    def run(case: Any) -> None:
        check(case)

    run()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_api_with_the_token(api_schema: Any, method: str, path: str) -> None:
    """With the token, no generated request (valid or not) makes a 5xx or an answer outside
    the schema."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    _fuzz(api_schema, method, path, lambda case: case.call_and_validate(headers=auth,
                                                                       checks=CHECKS))


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_api_without_a_token(api_schema: Any, method: str, path: str) -> None:
    """Without a token, or with a wrong one, no request makes a 5xx; every action is 401."""

    def check(case: Any) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            if method == "POST":
                assert response.status_code == 401

    _fuzz(api_schema, method, path, check)


def test_the_schema_declares_every_route(fuzzed: Served) -> None:
    """The schema lists each API route with its error responses, and the bearer scheme."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(fuzzed.control, token=TOKEN)) as client:
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert len(paths) == 21
    assert len(OPERATIONS) == 21
    assert "401" in paths["/api/pipelines/{name}/run"]["post"]["responses"]
    assert "409" in paths["/api/pipelines/{name}/dead-letters/replay"]["post"]["responses"]
    assert paths["/api/pipelines/{name}/run"]["post"]["security"] == [{"HTTPBearer": []}]
