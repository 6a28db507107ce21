"""Limits and access over real sockets: device ids, origins, connection caps, floods, paths, ranges, proxies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import websockets
from aiohttp import web

import server.app
from bench.devices import SimClock, SimDevice
from protocol import PROTOCOL_VERSION, encode
from protocol.messages import Abort, Hello, Join, Pong
from server.app import GATE, HUB
from server.identity import issue
from tests.conftest import RunningServer, scaled, small_show, start_server

JOIN = encode(Join(v=PROTOCOL_VERSION, device_id=None, client="limits-test"))


@asynccontextmanager
async def serving(tmp_path: Path, **config: object) -> AsyncIterator[tuple[web.Application, RunningServer]]:
    """A server on 127.0.0.1:0 with the small show and ``config``."""
    runner, running = await start_server(tmp_path, small_show(tmp_path), **config)
    try:
        yield runner.app, running
    finally:
        await runner.cleanup()


async def joined(url: str, device_id: str | None) -> tuple[str, str]:
    """Join with ``device_id``; (the id and group the server gave)."""
    device = SimDevice(SimClock(0), time.monotonic_ns, device_id=device_id, name="id-test")
    task = asyncio.create_task(device.run(url))
    try:
        await asyncio.wait_for(device.joined.wait(), scaled(5))
        assert device.welcome is not None
        return device.welcome.device_id, device.welcome.group
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------ identity


async def test_a_forged_id_gets_a_new_id_and_never_the_claimed_group(server: RunningServer) -> None:
    """Tampered, foreign and self-chosen ids are replaced; the new device is balanced, not put in the claimed group."""
    first_id, first_group = await joined(server.ws_url, None)
    assert await joined(server.ws_url, first_id) == (first_id, first_group)  # the real one keeps its group
    # Groups are balanced: with red 1, blue 0, a new device goes to the other group, never first_group.
    tampered = first_id[:-1] + ("A" if first_id[-1] != "A" else "B")
    new_id, group = await joined(server.ws_url, tampered)
    assert new_id != tampered and group != first_group
    assert await joined(server.ws_url, new_id) == (new_id, group)  # the issued one is sticky
    # An unsigned id from before, holding a group (now 2 to 1): the claim must not get it.
    legacy = "legacy-device-0001"
    legacy_group = server.hub.groups.assign(legacy)
    new_id, group = await joined(server.ws_url, legacy)
    assert new_id != legacy and group != legacy_group
    foreign = issue(b"another server's secret.........", bytes(16))
    new_id, _ = await joined(server.ws_url, foreign)
    assert new_id != foreign


async def test_the_device_secret_survives_a_restart(tmp_path: Path) -> None:
    """Ids stay valid across restarts (the secret is kept in the data dir, mode 0600)."""
    show = small_show(tmp_path)
    runner, running = await start_server(tmp_path, show)
    try:
        device_id, group = await joined(running.ws_url, None)
    finally:
        await runner.cleanup()
    secret = tmp_path / "var" / "device-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    runner, running = await start_server(tmp_path, show)
    try:
        assert await joined(running.ws_url, device_id) == (device_id, group)
    finally:
        await runner.cleanup()


# --------------------------------------------------------------- origin


async def test_a_foreign_origin_is_refused_before_the_handshake(server: RunningServer) -> None:
    """A page on another site gets 403 naming the origin and the option; same origin and no origin connect."""
    for url in (server.ws_url, server.organizer_url):
        with pytest.raises(websockets.InvalidStatus) as caught:
            await websockets.connect(url, origin="https://evil.example")  # type: ignore[arg-type]
        response = caught.value.response
        assert response.status_code == 403
        assert b"'https://evil.example'" in response.body and b"--allow-origin" in response.body
    own = server.base_url  # http://127.0.0.1:PORT
    async with websockets.connect(server.ws_url, origin=own) as ws:  # type: ignore[arg-type]
        await ws.send(JOIN)
        assert await asyncio.wait_for(ws.recv(), scaled(5))
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(JOIN)
        assert await asyncio.wait_for(ws.recv(), scaled(5))


async def test_an_allowed_origin_connects(tmp_path: Path) -> None:
    """--allow-origin lets that site's pages connect."""
    async with serving(tmp_path, allow_origins=("https://partner.example",)) as (_, running), websockets.connect(running.ws_url, origin="https://partner.example") as ws:  # type: ignore[arg-type]
        await ws.send(JOIN)
        assert await asyncio.wait_for(ws.recv(), scaled(5))


# ------------------------------------------------------ connection caps


async def refused(url: str, **kwargs: object) -> websockets.InvalidStatus:
    with pytest.raises(websockets.InvalidStatus) as caught:
        await websockets.connect(url, **kwargs)  # type: ignore[arg-type]
    return caught.value


async def test_connections_are_capped_per_address_and_in_all(tmp_path: Path) -> None:
    """The 3rd websocket from one address gets 503 + Retry-After; another address still connects, up to the total."""
    async with serving(tmp_path, max_per_address=2, max_connections=4) as (app, running):
        await _capped(app, running)


async def _capped(app: web.Application, running: RunningServer) -> None:
    a1 = await websockets.connect(running.ws_url)
    a2 = await websockets.connect(running.organizer_url)
    try:
        too_many = await refused(running.ws_url)
        assert too_many.response.status_code == 503
        assert too_many.response.headers["Retry-After"] == "10"
        assert b"--max-per-address 2" in too_many.response.body
        b1 = await websockets.connect(running.ws_url, local_addr=("127.0.0.2", 0))
        b2 = await websockets.connect(running.ws_url, local_addr=("127.0.0.2", 0))
        full = await refused(running.ws_url, local_addr=("127.0.0.3", 0))
        assert full.response.status_code == 503 and b"--max-connections" in full.response.body
        await b1.close()
        await b2.close()
    finally:
        await a1.close()
        await a2.close()
    # Closed connections are counted out: the address may connect again.
    for _ in range(100):
        if app[server.app.LIMITS].total == 0:
            break
        await asyncio.sleep(0.02)
    assert app[server.app.LIMITS].total == 0
    async with websockets.connect(running.ws_url) as ws:
        await ws.send(JOIN)
        assert await asyncio.wait_for(ws.recv(), scaled(5))


async def test_behind_a_trusted_proxy_the_forwarded_address_counts(tmp_path: Path) -> None:
    """Through a trusted proxy, each X-Forwarded-For client has its own cap and its own wrong-token delay."""
    async with serving(tmp_path, max_per_address=1, trusted_proxies=("127.0.0.1",)) as (app, running):
        await _proxied(app, running)


async def _proxied(app: web.Application, running: RunningServer) -> None:
    first = await websockets.connect(running.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.1"})
    try:
        second = await websockets.connect(running.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.2"})
        await second.close()
        again = await refused(running.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.1"})
        assert again.response.status_code == 503
    finally:
        await first.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{running.base_url}/api/status",
            headers={"Authorization": "Bearer wrong-guess", "X-Forwarded-For": "203.0.113.9"},
        ) as response:
            assert response.status == 401
    throttle = app[GATE].throttle
    now = time.monotonic()
    assert throttle.delay_s("203.0.113.9", now) > 0
    assert throttle.delay_s("127.0.0.1", now) == 0  # the proxy itself is not slowed for everyone


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    """Without --trusted-proxy, a client cannot dodge the wrong-token delay by writing X-Forwarded-For."""
    async with serving(tmp_path) as (app, running):
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{running.base_url}/api/status",
                headers={"Authorization": "Bearer wrong-guess", "X-Forwarded-For": "203.0.113.9"},
            ) as response:
                assert response.status == 401
        throttle = app[GATE].throttle
        assert throttle.delay_s("127.0.0.1", time.monotonic()) > 0
        assert throttle.delay_s("203.0.113.9", time.monotonic()) == 0


# ------------------------------------------------------------- floods


async def flood(url: str, first: bytes, frame: bytes, count: int) -> tuple[int | None, str]:
    """Send ``first`` then ``count`` copies of ``frame`` as fast as possible; the close code and reason."""
    async with websockets.connect(url, max_size=2**20) as ws:
        await ws.send(first)
        try:
            for _ in range(count):
                await ws.send(frame)
            while True:
                await asyncio.wait_for(ws.recv(), scaled(5))
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""


async def test_flooders_are_closed_and_an_honest_device_keeps_its_bound(server: RunningServer) -> None:
    """Pong floods on /ws and command floods on /ws/organizer close with 1008 'rate limit'; a device alongside stays synced."""
    honest = SimDevice(SimClock(3_000_000, skew_ppm=20), server.hub.clock.now_ns, name="honest")
    task = asyncio.create_task(honest.run(server.ws_url))
    try:
        await asyncio.wait_for(honest.joined.wait(), scaled(5))
        unsolicited = encode(Pong(seq=123456, t0_us=1, t1_us=2, t2_us=3))
        hello = encode(Hello(v=PROTOCOL_VERSION, token=server.token))
        results = await asyncio.gather(
            *(flood(server.ws_url, JOIN, unsolicited, 2000) for _ in range(4)),
            flood(server.organizer_url, hello, encode(Abort()), 2000),
        )
        for code, reason in results:
            assert code == 1008
            assert reason.startswith("rate limit: more than 50 messages a second")
        samples = honest.samples
        deadline = time.monotonic() + scaled(10)
        while honest.samples < samples + 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert honest.samples >= samples + 3, "the honest device stopped getting estimates"
        assert honest.close_code is None
        est = honest.estimate
        assert est is not None and est.bound_us < 5_000
        now_device_us = honest.device_now_us()
        error_us = honest.offset_us_at(now_device_us) - honest.clock.true_offset_ns(server.hub.clock.now_ns()) / 1000
        assert abs(error_us) <= honest.bound_us_at(now_device_us) + 1_000
        assert len(server.hub.devices) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------ paths and ranges


async def raw_get(base_url: str, path: str, headers: tuple[str, ...] = ()) -> tuple[int, dict[str, str], bytes]:
    """One GET with ``path`` sent byte for byte (no client-side normalising): status, headers, body."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    data = await asyncio.wait_for(reader.read(), scaled(5))
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), fields, body


TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt",
    "/js/../../secret.txt",
    "/js/..%2f..%2fsecret.txt",
    "/js%5c..%5c..%5csecret.txt",
    "/..\\secret.txt",
    "//secret.txt",
    "/secret.txt%00.html",
    "/%00",
    "/leak",  # a symlink in the web root to the secret outside it
    "/linkdir/secret.txt",  # a symlinked directory
    "/tracks/../secret.txt",
    "/tracks/..%2fsecret.txt",
    "/tracks/%2e%2e%2fsecret.txt",
    "/tracks/..\\secret.txt",
    "/tracks/%00",
    "/tracks/show.toml",  # next to the tracks, but not a track
    "/tracks//etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_no_path_reaches_outside_the_web_root_or_the_tracks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """../, %2e%2e, %2f, backslash, NUL, absolute paths and symlinks out of the web root get 4xx, never the file."""
    web_root = tmp_path / "web"
    (web_root / "js").mkdir(parents=True)
    (web_root / "index.html").write_text("<!doctype html><title>t</title>")
    (web_root / "js" / "ok.js").write_text("export {};")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    (web_root / "leak").symlink_to(secret)
    (web_root / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.setattr(server.app, "WEB_ROOT", web_root)
    async with serving(tmp_path) as (_, running):
        status, _, body = await raw_get(running.base_url, path)
        assert status in (400, 403, 404), (path, status)
        assert b"TOP-SECRET" not in body and b"organizer-token" not in body
        # The server is unharmed and still serves its own files.
        ok_status, _, ok_body = await raw_get(running.base_url, "/js/ok.js")
        assert ok_status == 200 and ok_body == b"export {};"


TRACK_BYTES = 48_044  # small_show's 3 s mono 8 kHz 16-bit WAV with its 44-byte header

RANGES = [
    pytest.param("bytes=0-99", 206, "bytes 0-99/48044", 100, id="plain"),
    pytest.param("bytes=0-0", 206, "bytes 0-0/48044", 1, id="one-byte"),
    pytest.param("bytes=-100", 206, "bytes 47944-48043/48044", 100, id="suffix"),
    pytest.param("bytes=0-99999999999999999999999", 206, "bytes 0-48043/48044", TRACK_BYTES, id="huge-end"),
    pytest.param("bytes=-99999999999999999999", 206, "bytes 0-48043/48044", TRACK_BYTES, id="huge-suffix"),
    pytest.param("bytes=99999999999999999999-", 416, "bytes */48044", None, id="huge-start"),
    pytest.param("bytes=48044-", 416, "bytes */48044", None, id="past-the-end"),
    pytest.param("bytes=100-10", 416, "bytes */48044", None, id="reversed"),
    pytest.param("bytes=0-10,5-15", 416, "bytes */48044", None, id="overlapping"),
    pytest.param("bytes=" + ",".join(f"{i}-{i}" for i in range(1000)), 416, "bytes */48044", None, id="1000-ranges"),
    pytest.param("bytes=--5", 416, "bytes */48044", None, id="negative"),
    pytest.param("bytes=abc", 416, "bytes */48044", None, id="garbage"),
    pytest.param("bytes=0x10-0x20", 416, "bytes */48044", None, id="hex"),
    pytest.param("bytes=\u0661-\u0662", 416, "bytes */48044", None, id="unicode-digits"),
    pytest.param("pages=1-2", 416, "bytes */48044", None, id="other-unit"),
    pytest.param("bytes=", 416, "bytes */48044", None, id="empty"),
]


@pytest.mark.parametrize("header, status, content_range, length", RANGES)
async def test_abusive_ranges_get_206_or_416_never_a_crash(
    server: RunningServer, header: str, status: int, content_range: str, length: int | None
) -> None:
    """Each Range on a track is answered 206 with a consistent Content-Range, or 416; the server keeps serving."""
    got, fields, body = await raw_get(server.base_url, "/tracks/red.wav", (f"Range: {header}",))
    assert got == status
    assert fields["content-range"] == content_range
    if length is not None:
        assert len(body) == length
    full, _, whole = await raw_get(server.base_url, "/tracks/red.wav")
    assert full == 200 and len(whole) == TRACK_BYTES


async def test_a_range_header_over_the_line_limit_is_a_400(server: RunningServer) -> None:
    """A Range header of 20,000 characters is refused by the HTTP parser (4xx), not a 500."""
    got, _, _ = await raw_get(server.base_url, "/tracks/red.wav", ("Range: bytes=" + "0-0," * 5000,))
    assert 400 <= got < 500


async def test_an_api_body_over_the_cap_is_refused(server: RunningServer) -> None:
    """A 100 KB body to the API is refused with a 4xx and a reason."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.base_url}/api/announce",
            data=b"{" + b" " * 100_000 + b"}",
            headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
        ) as response:
            assert 400 <= response.status < 500
            assert "over" in await response.text()


# ------------------------------------------------------------ headers


@pytest.mark.parametrize("path", ["/", "/organizer.html", "/js/net.js", "/sw.js", "/tracks/red.wav", "/poster", "/join.svg", "/nope", "/healthz"])
async def test_every_response_carries_the_security_headers(server: RunningServer, path: str) -> None:
    """CSP without inline scripts, nosniff, no referrer, no framing and a permissions policy, on every response."""
    _, fields, _ = await raw_get(server.base_url, path)
    policy = fields["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert fields["x-content-type-options"] == "nosniff"
    assert fields["referrer-policy"] == "no-referrer"
    assert fields["x-frame-options"] == "DENY"
    assert "screen-wake-lock=(self)" in fields["permissions-policy"]


async def test_the_poster_inline_style_is_allowed_by_its_hash(server: RunningServer) -> None:
    """The poster's one inline <style> matches the hash in its policy, so it renders under the CSP."""
    import re

    from server.security import style_hash

    _, fields, body = await raw_get(server.base_url, "/poster")
    css = re.search(rb"<style>(.*?)</style>", body, re.S)
    assert css is not None
    assert style_hash(css.group(1).decode("utf-8")) in fields["content-security-policy"]
