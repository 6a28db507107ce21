"""The running server answers as its OpenAPI document says (schemathesis, generated requests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from server.openapi import openapi_document
from tests.conftest import TEST_TOKEN, RunningServer, small_show, start_server

schema = schemathesis.openapi.from_dict(openapi_document())


# The test sends the token itself (below), so cases are generated without the
# security scheme's header: otherwise a case generated to lack it would carry
# the token anyway and "schema-violating request accepted" would follow.
# tests/integration/test_api.py checks every call without and with a wrong token.
schema.config.generation.update(with_security_parameters=False)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real server on its own event loop in a thread: schemathesis calls it synchronously."""
    tmp_path: Path = tmp_path_factory.mktemp("openapi")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        runner, running = await start_server(tmp_path, small_show(tmp_path), ready_share_min=0.0)
        box["server"], box["stop"] = running, asyncio.Event()
        started.set()
        await box["stop"].wait()  # type: ignore[attr-defined]
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "the server did not start"
    yield box["server"]  # type: ignore[misc]
    loop.call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
    thread.join(30)


def test_the_served_document_is_the_contract(live_server: RunningServer) -> None:
    """/api/openapi.json needs no token and is the document this test checks against."""
    response = requests.get(live_server.base_url + "/api/openapi.json", timeout=10)
    assert response.status_code == 200 and response.json() == openapi_document()


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_server_conforms_to_its_openapi_document(case: schemathesis.Case, live_server: RunningServer) -> None:
    """Every documented operation, fed generated bodies and parameters: documented status codes,
    JSON bodies matching their schemas, no server error."""
    # ignored_auth sends wrong tokens, which the server answers ever more slowly
    # (server/auth.py); tests/integration/test_api.py checks every call's auth instead.
    response = case.call_and_validate(
        base_url=live_server.base_url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        excluded_checks=[schemathesis.checks.ignored_auth],
        timeout=10,
    )
    # The token went with every call: a 401 here would mean the checks only saw refusals.
    assert response.status_code != 401, response.text
