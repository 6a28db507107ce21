"""HTTP API bodies on arbitrary input: a valid command, or a 4xx JSON {error, message}; never a 500.

The parsing of start, reschedule and announce bodies is fuzzed directly (fast)
on arbitrary bytes, arbitrary JSON documents and mutated valid bodies; a
smaller run sends arbitrary bodies and content types to a real server.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningServer
from tests.fuzz.targets import API_SEEDS, TARGETS, json_values, mutate

API = TARGETS["api"].run
FAST = settings(max_examples=300, deadline=None)


@FAST
@given(st.binary(max_size=600))
@example(b"[" * 3000)  # deeper than the interpreter's recursion limit
@example(b'{"in_s": ' + b"9" * 400 + b"}")  # an integer no float holds
@example(b'{"in_s": NaN}')
@example(b'{"in_s": -Infinity}')
@example(b'{"text": "\\ud800"}')  # a lone surrogate: valid JSON, not encodable text
@example(b'{"at": "0001-01-01T00:00:00+00:00"}')
@example(b'{"at": "9999-12-31T23:59:59-23:59"}')
@example(b"\xff\xfe")
def test_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes: every operation answers a command or a 4xx error."""
    API(data)


@FAST
@given(json_values())
def test_arbitrary_json(value: Any) -> None:
    """Any JSON document, as a body and as the value of each field the API takes."""
    API(json.dumps(value).encode())
    for field in ("in_s", "at", "confirm", "text"):
        API(json.dumps({field: value}).encode())


@FAST
@given(st.sampled_from(API_SEEDS), st.randoms(use_true_random=False))
def test_mutated_valid_bodies(seed: bytes, rng: Any) -> None:
    """Valid bodies with bytes flipped, inserted, deleted or spliced."""
    API(mutate(seed, rng, API_SEEDS))


def test_known_bodies() -> None:
    """Valid bodies are accepted by their operation, and the refusals carry their codes."""
    assert API(b'{"in_s": 10}') == "start ok, announce bad_request"
    assert API(b'{"text": "hi"}') == "start bad_request, announce ok"
    assert API(b'{"at": "2999-01-01T00:00:00Z"}') == "start too_far, announce bad_request"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/api/start", "/api/reschedule", "/api/announce", "/api/abort"]),
    body=st.binary(max_size=300) | json_values().map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]),
)
async def test_real_server_answers_4xx_json(server: RunningServer, path: str, body: bytes, content_type: str) -> None:
    """Through a real server: whatever the body and content type, the answer is a JSON 2xx/4xx, never 5xx."""
    headers = {"Authorization": f"Bearer {server.token}"}
    if content_type:
        headers["Content-Type"] = content_type
    async with aiohttp.ClientSession() as session:
        async with session.post(server.base_url + path, data=body, headers=headers) as response:
            assert response.status < 500, await response.text()
            document = await response.json()
            if response.status >= 400:
                assert set(document) == {"error", "message"}
    if server.hub.show.state in ("scheduled", "playing"):
        server.hub.abort_show("test")  # the next example starts from idle again
