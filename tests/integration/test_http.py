"""HTTP: pages, tracks with Range and caching headers, health."""

from __future__ import annotations

import aiohttp

from tests.conftest import RunningServer


async def test_track_range_and_cache_headers(server: RunningServer) -> None:
    """A Range request gets 206 with exactly those bytes; caching headers are set."""
    path = server.hub.show_spec.tracks["red"]
    body = path.read_bytes()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/tracks/red.wav", headers={"Range": "bytes=100-199"}) as resp:
            assert resp.status == 206
            assert await resp.read() == body[100:200]
            assert resp.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
            assert resp.headers["Cache-Control"] == "public, max-age=3600"
            assert resp.headers["Accept-Ranges"] == "bytes"
            etag = resp.headers["ETag"]
        async with http.get(f"{server.base_url}/tracks/red.wav", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        async with http.get(f"{server.base_url}/tracks/red.wav") as resp:
            assert resp.status == 200 and await resp.read() == body


async def test_unknown_track_and_traversal_are_not_found(server: RunningServer) -> None:
    """Only the show's tracks are served from /tracks/."""
    async with aiohttp.ClientSession() as http:
        for name in ("nope.wav", "..%2Forganizer-token", "%2E%2E%2Fvar%2Forganizer-token"):
            async with http.get(f"{server.base_url}/tracks/{name}") as resp:
                assert resp.status == 404


async def test_pages_and_health(server: RunningServer) -> None:
    """The participant page, the organizer page, a JS module and /healthz are served."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/") as resp:
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
        async with http.get(f"{server.base_url}/vendor/msgpack/index.mjs") as resp:
            # Browsers refuse ES modules served with a non-JavaScript type.
            assert resp.status == 200
            assert resp.headers["Content-Type"] in ("text/javascript", "application/javascript")
        async with http.get(f"{server.base_url}/healthz") as resp:
            assert resp.status == 200 and await resp.text() == "ok"


async def test_service_worker_at_the_root_and_modules_revalidated(server: RunningServer) -> None:
    """/sw.js is served from the root as JavaScript; it, the page and the modules are revalidated (no-cache), tracks kept."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/sw.js") as resp:
            assert resp.status == 200 and "javascript" in resp.headers["Content-Type"]
            assert resp.headers["Cache-Control"] == "no-cache"
            assert "OFFLINE_CACHE" in await resp.text()
        for path in ("/", "/js/offline.js", "/css/unisono.css", "/vendor/msgpack/index.mjs"):
            async with http.get(f"{server.base_url}{path}") as resp:
                assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache", path


async def test_frames_to_an_idle_connection_are_written_at_once(server: RunningServer) -> None:
    """The hot path's shortcuts around aiohttp are in use: frames written at once (Outbox._write_now
    on aiohttp's frame writer), arrival stamps (connection.Arrivals on the transport) and the HTTP state
    let go after the upgrade (connection.shed_http_state). If an aiohttp upgrade broke what they rely on,
    each would silently fall back to the slow (or larger) path."""
    import asyncio

    from bench.devices import SimClock, SimDevice

    device = SimDevice(SimClock(0), server.hub.clock.now_ns, name="direct")
    task = asyncio.create_task(device.run(server.ws_url))
    try:
        await asyncio.wait_for(device.joined.wait(), 5)
        server.hub.start_show(server.hub.clock.now_ns() + 3_000_000_000)
        await asyncio.wait_for(device.scheduled.wait(), 5)
        (joined,) = server.hub.devices
        assert joined.outbox.direct_writes > 0
        # And pongs are stamped by the kernel as their bytes arrive, not when the handler gets to them.
        assert joined.stamp_source == "kernel"
        # And aiohttp's HTTP parser and request queue, of no use after the upgrade, were let go
        # (connection.shed_http_state: ~1.9 KB a phone).
        protocol = joined.outbox.ws._req.protocol  # type: ignore[union-attr]
        assert protocol._parser is None and protocol._messages == ()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
