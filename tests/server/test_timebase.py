"""server.timebase over real UDP on 127.0.0.1: the SNTP responder as ntplib sees it, and two nodes sharing one clock."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import ntplib
import pytest
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from clock.ntp import Header, ServerIdentity, ntp_to_unix_ns, unix_ns_to_ntp
from clock.reference import ReferenceClock
from server.app import HUB, make_app
from server.cli import main
from server.config import ConfigError, ServerConfig
from server.hub import Hub
from server.hub import ServerClock as HubServerClock
from server.timebase import ServerClock, SntpResponder, UpstreamPoller, start_responder
from tests.conftest import TEST_TOKEN, scaled, small_show

MS = 1_000_000
# Node B runs this far ahead of the machine's clock; node A must follow it.
B_AHEAD_NS = 250 * MS


def ntp_query(port: int, version: int = 4) -> ntplib.NTPStats:
    """ntplib's request, in a thread: the responder answers on this test's event loop."""
    return ntplib.NTPClient().request("127.0.0.1", port=port, version=version, timeout=scaled(2.0))


def raw_exchange(port: int, data: bytes, wait_s: float) -> bytes | None:
    """Send ``data`` to the responder and return its answer, or None if none comes within ``wait_s``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait_s)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(512)
        except TimeoutError:
            return None


def request(version: int = 4, mode: int = 3, transmit_ts: int = 0) -> bytes:
    return struct.pack("!BBBb11I", (version << 3) | mode, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, transmit_ts >> 32, transmit_ts & 0xFFFFFFFF)


@pytest.fixture
async def responder() -> AsyncIterator[SntpResponder]:
    clock = ServerClock()
    started = clock.now_ns()
    sntp = await start_responder(clock, lambda: ServerIdentity.local(started), "127.0.0.1", 0)
    yield sntp
    assert sntp.transport is not None
    sntp.transport.close()


def test_hub_still_exports_server_clock() -> None:
    """server.hub.ServerClock is the disciplined clock, with now_ns() and reference as before."""
    assert HubServerClock is ServerClock
    clock = ServerClock()
    assert isinstance(clock.reference, ReferenceClock)
    assert abs(clock.now_ns() - time.time_ns()) < 50 * MS


@pytest.mark.parametrize("version", [3, 4])
async def test_ntplib_gets_a_correct_answer(responder: SntpResponder, version: int) -> None:
    """ntplib v3 and v4: mode 4, its version echoed, stratum 8 (local clock), offset 0 within half the round trip, a small round trip."""
    stats = await asyncio.to_thread(ntp_query, responder.address[1], version)
    assert (stats.mode, stats.version, stats.leap, stats.stratum) == (4, version, 0, 8)
    # The true offset is 0 (the responder's clock was anchored to this wall clock a moment ago);
    # the measured one is within half the round trip of it (the thread and the loop share 2 cores).
    assert abs(stats.offset) <= stats.delay / 2 + 0.001
    assert 0 <= stats.delay < scaled(0.25)
    assert stats.recv_timestamp <= stats.tx_timestamp


async def test_raw_answer_echoes_the_transmit_timestamp(responder: SntpResponder) -> None:
    """The answer's originate is the request's transmit bit for bit; its receive and transmit are now."""
    transmit_ts = unix_ns_to_ntp(time.time_ns()) | 0x5A5  # odd low bits: any rounding would show
    data = await asyncio.to_thread(raw_exchange, responder.address[1], request(transmit_ts=transmit_ts), scaled(2.0))
    assert data is not None and len(data) == 48
    reply = Header.decode(data)
    assert (reply.mode, reply.version) == (4, 4)
    assert reply.originate_ts == transmit_ts
    assert abs(ntp_to_unix_ns(reply.receive_ts) - time.time_ns()) < 50 * MS
    assert reply.receive_ts <= reply.transmit_ts


async def test_malformed_datagrams_get_no_answer_and_the_responder_keeps_answering(responder: SntpResponder) -> None:
    """Empty, 10 bytes, mode 4, versions 0 and 7, random bytes: dropped and counted; a valid request right after is answered."""
    port = responder.address[1]
    bad = [b"", b"\x23" * 10, request(mode=4), request(version=0), request(version=7), bytes.fromhex("ff" * 48), b"\x01" * 47]
    for data in bad:
        assert await asyncio.to_thread(raw_exchange, port, data, 0.2) is None
    assert responder.dropped == len(bad)
    answer = await asyncio.to_thread(raw_exchange, port, request(), scaled(2.0))
    assert answer is not None and Header.decode(answer).mode == 4
    assert responder.answered == 1


async def test_poller_survives_a_silent_upstream() -> None:
    """An upstream port with nothing behind it: failures are counted, the clock stays unsynchronized, the task runs on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    clock = ServerClock()
    poller = UpstreamPoller(clock, "127.0.0.1", port, poll_s=0.2, timeout_s=0.2)
    task = asyncio.create_task(poller.run())
    try:
        deadline = time.monotonic() + scaled(10)
        while poller.failures < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert poller.failures >= 2
        assert not task.done()
        assert poller.status()["state"] == "unsynchronized"
        assert poller.status()["upstream_offset_ms"] is None
        assert poller.identity() == ServerIdentity.unsynchronized()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- two nodes ---------------------------------------------------------------------


async def start_node(tmp_path: Path, clock: ServerClock | None = None, **options: object) -> tuple[web.AppRunner, Hub, str]:
    """A server app on 127.0.0.1:0, its clock replaced before start-up; returns its runner, hub and base URL."""
    cfg = ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "var", organizer_token=TEST_TOKEN, **options)  # type: ignore[arg-type]
    app = make_app(cfg, small_show(tmp_path))
    if clock is not None:
        app[HUB].clock = clock
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, app[HUB], f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_two_nodes_agree(tmp_path: Path) -> None:
    """Node B runs 250 ms ahead and answers SNTP; node A takes it as upstream: after its first burst A agrees with B within 5 ms."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    b_clock = ServerClock(ReferenceClock(time.time_ns() + B_AHEAD_NS, time.monotonic_ns()))
    runner_b, hub_b, _ = await start_node(tmp_path / "b", b_clock, sntp_host="127.0.0.1", sntp_port=0)
    assert hub_b.sntp is not None and hub_b.upstream is None
    b_port = hub_b.sntp.address[1]
    runner_a, hub_a, url_a = await start_node(
        tmp_path / "a", ntp_upstream=f"127.0.0.1:{b_port}", ntp_poll_s=0.4, sntp_host="127.0.0.1", sntp_port=0
    )
    try:
        assert hub_a.upstream is not None and hub_a.sntp is not None
        deadline = time.monotonic() + scaled(10)
        while hub_a.upstream.state() == "unsynchronized" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert hub_a.upstream.state() in ("stepped", "slewing", "locked")
        assert hub_a.clock.discipline.steps == 1

        # Read back to back, in either order: the two servers' clocks.
        agreement_ns = max(abs(hub_a.clock.now_ns() - hub_b.clock.now_ns()), abs(hub_b.clock.now_ns() - hub_a.clock.now_ns()))
        print(f"node A - node B after the first burst: {agreement_ns / 1e6:.3f} ms")
        assert agreement_ns < 5 * MS

        # The same seen from outside, through both nodes' SNTP answers.
        stats_a = await asyncio.to_thread(ntp_query, hub_a.sntp.address[1])
        stats_b = await asyncio.to_thread(ntp_query, b_port)
        assert abs(stats_b.offset - B_AHEAD_NS / 1e9) <= stats_b.delay / 2 + 0.001
        assert abs(stats_a.offset - stats_b.offset) <= (stats_a.delay + stats_b.delay) / 2 + 0.005
        assert (stats_b.stratum, stats_a.stratum, stats_a.leap) == (8, 9, 0)
        assert hub_a.upstream.identity().reference_id == bytes([127, 0, 0, 1])

        health = hub_a.clock_health()
        assert health["upstream"] == f"127.0.0.1:{b_port}"
        assert health["stratum"] == 8
        assert isinstance(health["upstream_offset_ms"], float) and abs(health["upstream_offset_ms"]) < 5
        assert isinstance(health["correction_ms"], float) and abs(health["correction_ms"] - 250) < 5
        assert isinstance(health["last_sync_age_s"], float)
        assert "loop_lag_ms" in health
        assert hub_b.clock_health()["upstream"] is None

        async with ClientSession() as http:
            async with http.get(f"{url_a}/metrics") as response:
                body = await response.text()
            async with http.get(f"{url_a}/api/status", headers={"Authorization": f"Bearer {TEST_TOKEN}"}) as response:
                assert response.status == 200
                status = await response.json()
        gauges = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
        assert abs(gauges["unisono_upstream_clock_offset_ms"]) < 5
        assert status["clock"]["upstream"] == f"127.0.0.1:{b_port}"
        assert abs(status["clock"]["upstream_offset_ms"]) < 5

        # Later polls keep it: no second step, still within 5 ms.
        polls = hub_a.upstream.queries
        while hub_a.upstream.queries < polls + 2 and time.monotonic() < deadline + scaled(5):
            await asyncio.sleep(0.05)
        assert hub_a.clock.discipline.steps == 1
        assert abs(hub_a.clock.now_ns() - hub_b.clock.now_ns()) < 5 * MS
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()


async def test_no_clock_options_no_timebase(tmp_path: Path) -> None:
    """Without --ntp-upstream and --sntp-port nothing extra runs and the health says no upstream."""
    runner, hub, _ = await start_node(tmp_path)
    try:
        assert hub.upstream is None and hub.sntp is None
        health = hub.clock_health()
        assert (health["upstream"], health["upstream_offset_ms"]) == (None, None)
    finally:
        await runner.cleanup()


# --- options ---------------------------------------------------------------------


@pytest.mark.parametrize("upstream", ["", "host:", "host:x", ":123", "host:0", "host:70000", "[::1", "[::1]x"])
def test_bad_upstream_is_refused_naming_the_option(upstream: str) -> None:
    """A malformed --ntp-upstream raises ConfigError naming ntp_upstream."""
    with pytest.raises(ConfigError, match="ntp_upstream"):
        ServerConfig(ntp_upstream=upstream)


def test_upstream_address_forms() -> None:
    """host (port 123), host:port, [v6]:port."""
    assert ServerConfig(ntp_upstream="pool.ntp.org").ntp_upstream_address == ("pool.ntp.org", 123)
    assert ServerConfig(ntp_upstream="10.0.0.2:1123").ntp_upstream_address == ("10.0.0.2", 1123)
    assert ServerConfig(ntp_upstream="[::1]:1123").ntp_upstream_address == ("::1", 1123)
    assert ServerConfig().ntp_upstream_address is None


@pytest.mark.parametrize("options", [{"sntp_port": 70000}, {"sntp_port": -1}, {"ntp_poll_s": 0}, {"sntp_local_stratum": 16}])
def test_bad_clock_options(options: dict[str, object]) -> None:
    """Out-of-range SNTP port, poll interval or local stratum: ConfigError naming the option."""
    with pytest.raises(ConfigError, match=next(iter(options))):
        ServerConfig(**options)  # type: ignore[arg-type]


def test_cli_refuses_a_bad_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    """`unisono serve --ntp-upstream host:x` exits 2 with the option named."""
    assert main(["serve", "--ntp-upstream", "host:x", "--sntp-port", "0"]) == 2
    assert "ntp_upstream" in capsys.readouterr().err
