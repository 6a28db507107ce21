"""The organizer's CLI commands: pure parsing and formatting, then the commands against a real server."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Announcement, Join
from server.cli import main
from server.commands import organizer_url, parse_at, parse_duration_s, scheduled_text, server_url, start_body, status_text
from tests.conftest import RunningServer, scaled

CET = timezone(timedelta(hours=1), "CET")
# 2026-11-28 21:03:10 CET, a Saturday evening.
NOW = datetime(2026, 11, 28, 21, 3, 10, 250_000, tzinfo=CET)
NOW_US = int(NOW.timestamp() * 1_000_000)


@pytest.fixture(autouse=True)
def no_cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' defaults come from the environment: keep the developer's out of the tests."""
    monkeypatch.delenv("UNISONO_SERVER", raising=False)
    monkeypatch.delenv("UNISONO_TOKEN", raising=False)


# -- pure parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("90s", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("1h2m3s", 3723), ("10", 10), ("2.5", 2.5), (" 1M ", 60)],
)
def test_durations(text: str, seconds: float) -> None:
    """--in takes seconds, minutes and hours in h-m-s order, or a plain number of seconds."""
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(("text", "says"), [("", "expected a duration"), ("10x", "found '10x'"), ("s", "found 's'"),
                                            ("30s1m", "found '30s1m'"), ("-5", "found '-5'"), ("0s", "above 0"),
                                            ("25h", "at most 24 hours")])
def test_bad_durations_say_what_was_expected(text: str, says: str) -> None:
    """A malformed, zero or over-a-day duration raises ValueError naming what was expected and found."""
    with pytest.raises(ValueError, match=says):
        parse_duration_s(text)


def test_at_time_of_day_is_today_in_local_time() -> None:
    """HH:MM:SS and HH:MM name that time today, in now's timezone."""
    assert parse_at("21:30:05", NOW) == datetime(2026, 11, 28, 21, 30, 5, tzinfo=CET)
    assert parse_at("23:00", NOW) == datetime(2026, 11, 28, 23, 0, tzinfo=CET)


def test_at_in_the_past_says_what_to_do() -> None:
    """A time of day already past today (or exactly now, to the second) is an error, not tomorrow."""
    with pytest.raises(ValueError) as info:
        parse_at("21:00:00", NOW)
    assert str(info.value) == "21:00:00 is in the past (it is 21:03:10 now): give a later time, or use --in"
    with pytest.raises(ValueError, match="is in the past"):
        parse_at("21:03:10", NOW)


def test_at_iso_datetime_with_offset() -> None:
    """A full ISO 8601 datetime with an offset (or Z) is taken as it is, in any timezone."""
    assert parse_at("2026-11-29T09:00:00+09:00", NOW) == datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert parse_at("2026-11-28T21:00:00Z", NOW) == datetime(2026, 11, 28, 21, tzinfo=timezone.utc)


def test_at_iso_datetime_in_the_past_or_without_offset() -> None:
    """An ISO datetime in the past is an error; one without an offset asks for one."""
    with pytest.raises(ValueError, match=r"is in the past \(it is 2026-11-28T20:03:10\+00:00 now\)"):
        parse_at("2026-11-28T20:00:00Z", NOW)
    with pytest.raises(ValueError, match="has no UTC offset: add one"):
        parse_at("2026-11-28T22:00:00", NOW)


@pytest.mark.parametrize("text", ["24:00", "21:60", "9", "21:00:00:00", "tomorrow", "21h"])
def test_at_bad_formats(text: str) -> None:
    """Anything else than HH:MM[:SS] or an ISO datetime says which formats --at takes."""
    with pytest.raises(ValueError, match="expected"):
        parse_at(text, NOW)


def test_start_body() -> None:
    """The body carries exactly one of in_s and at (RFC 3339 with offset), and confirm only when asked."""
    assert start_body(10.0, None, False) == {"in_s": 10.0}
    at = datetime(2026, 11, 28, 21, 30, tzinfo=CET)
    assert start_body(None, at, True) == {"at": "2026-11-28T21:30:00+01:00", "confirm": True}


# -- pure formatting ------------------------------------------------------------


def test_scheduled_text() -> None:
    """Success names the start's local time and zone, how far ahead it is, and the epoch."""
    start_us = int(datetime(2026, 11, 28, 21, 3, 20, 250_000, tzinfo=CET).timestamp() * 1_000_000)
    snapshot = {"epoch": 3, "state": "scheduled", "start_us": start_us, "start_time": "2026-11-28T21:03:20.25+01:00"}
    assert scheduled_text("scheduled", snapshot, NOW_US, CET) == "Show scheduled: starts at 21:03:20 CET (in 10.0 s), epoch 3"
    tomorrow = {**snapshot, "start_us": start_us + 86_400_000_000}
    assert "starts at 2026-11-29 21:03:20 CET (in 86410.0 s)" in scheduled_text("rescheduled", tomorrow, NOW_US, CET)


def status_example(**changes: Any) -> dict[str, Any]:
    """A literal /api/status answer: scheduled in 42 s, three devices in two groups, one laggard."""
    status: dict[str, Any] = {
        "title": "Place du Marché",
        "show": {"epoch": 2, "state": "scheduled", "start_us": NOW_US + 42_000_000, "start_time": "2026-11-28T21:03:52.25+01:00"},
        "server_us": NOW_US,
        "server_time": "2026-11-28T21:03:10.25+01:00",
        "timezone": "Europe/Paris",
        "devices": 3,
        "groups": {
            "red": {"connected": 2, "downloaded": 2, "unlocked": 2, "synced": 1, "ready": 1},
            "blue": {"connected": 1, "downloaded": 1, "unlocked": 1, "synced": 1, "ready": 1},
        },
        "funnel": {"connected": 3, "downloaded": 3, "unlocked": 3, "synced": 2, "ready": 2},
        "bounds": {"edges_ms": [1, 2, 5, 10, 20, 50, 100], "counts": [1, 1, 0, 0, 0, 1, 0, 0], "unknown": 0},
        "laggards": [{"device": "ab12cd34", "group": "red", "bound_ms": 35.0, "rtt_ms": 80.5, "reason": "bound 35 ms"}],
        "lead_min_ms": 1500,
        "ready_share": 2 / 3,
        "ready_share_min": 0.8,
        "clock": {"loop_lag_ms": 0.4, "upstream_offset_ms": None, "upstream": None},
        "join_url": "http://192.0.2.1:8080/",
    }
    status.update(changes)
    return status


def test_status_text_shows_every_part() -> None:
    """The table: state and start, devices and ready share, lead, per-group rows and the funnel, bounds, laggards, clock."""
    lines = status_text(status_example(), CET).splitlines()
    assert lines[0] == "Place du Marché: scheduled, epoch 2"
    assert "  start:  21:03:52 CET (in 42.0 s)" in lines
    assert "  server: 2026-11-28T21:03:10.25+01:00, timezone Europe/Paris" in lines
    assert "  devices: 3 connected, ready 67% (a start without --yes needs 80%)" in lines
    assert "  shortest safe lead: 1.5 s" in lines
    assert lines[lines.index("group  connected  downloaded  unlocked  synced  ready") + 1 :][:3] == [
        "red            2           2         2       1      1",
        "blue           1           1         1       1      1",
        "all            3           3         3       2      2",
    ]
    assert "  <= 1 ms            1" in lines and "  > 100 ms           0" in lines and "  no estimate        0" in lines
    assert "  ab12cd34  red    35.0 ms  80.5 ms  bound 35 ms" in lines
    assert "clock: event loop lag p99 0.4 ms, no upstream NTP server" in lines
    assert lines[-1] == "join:  http://192.0.2.1:8080/"


def test_status_text_idle_with_many_laggards() -> None:
    """Idle shows no start line; at most ten laggards are listed, with the total; an upstream's offset is shown."""
    laggards = [{"device": f"dev{i:05d}", "group": "red", "bound_ms": None, "rtt_ms": None, "reason": "not downloaded"} for i in range(14)]
    status = status_example(
        show={"epoch": 0, "state": "idle", "start_us": None, "start_time": None},
        laggards=laggards,
        clock={"loop_lag_ms": 1.25, "upstream_offset_ms": -2.5, "upstream": "pool.ntp.org"},
    )
    text = status_text(status, CET)
    assert "start:" not in text
    assert "laggards (14, 10 shown)" in text
    assert "dev00009" in text and "dev00010" not in text
    assert "  dev00000  red        -    -  not downloaded" in text.splitlines()
    assert "upstream pool.ntp.org offset -2.5 ms" in text


def test_server_url() -> None:
    """--server may leave out http:// and may end in a slash."""
    assert server_url("192.0.2.1:8080") == "http://192.0.2.1:8080"
    assert server_url("https://show.example/") == "https://show.example"


def test_organizer_url() -> None:
    """The console URL is the server's, with the token quoted into the query."""
    assert organizer_url("http://192.0.2.1:8080/", "ab-c_d/e") == "http://192.0.2.1:8080/organizer.html?token=ab-c_d%2Fe"


# -- commands without a server ------------------------------------------------------


def free_port() -> int:
    """A local port with nothing listening on it (bound, then closed at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_token_prints_the_token_and_console_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`unisono token` reads DATA_DIR/organizer-token and prints it with the organizer URL on --server."""
    (tmp_path / "organizer-token").write_text("k" * 32 + "\n", encoding="utf-8")
    assert main(["token", "--data-dir", str(tmp_path), "--server", "http://192.0.2.1:9000"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "token:     " + "k" * 32,
        "organizer: http://192.0.2.1:9000/organizer.html?token=" + "k" * 32,
    ]


def test_token_without_a_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no token file yet, `unisono token` says to run serve once, and exits 1."""
    assert main(["token", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"no token yet: run `unisono serve` once (it creates {tmp_path / 'organizer-token'})" in err


def test_no_server_says_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection says there is no server at that URL and how to start one or point elsewhere."""
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["status", "--server", url, "--token", "t" * 20]) == 1
    assert capsys.readouterr().err == (
        f"unisono status: no Unisono server at {url}: start one with `unisono serve`, or pass --server\n"
    )


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts the connection but never answers is given up on after the timeout."""
    monkeypatch.setattr("server.commands.REQUEST_TIMEOUT_S", 0.2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert main(["abort", "--server", url, "--token", "t" * 20]) == 1
    assert f"the server at {url} did not answer within 0.2 s" in capsys.readouterr().err


def test_no_token_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --token, UNISONO_TOKEN or a token file, the command says where a token comes from."""
    assert main(["abort", "--data-dir", str(tmp_path), "--server", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "no organizer token: pass --token or set UNISONO_TOKEN" in capsys.readouterr().err


def test_start_at_in_the_past_needs_no_server(capsys: pytest.CaptureFixture[str]) -> None:
    """--at a time already past is refused before any request, exit 1, saying to give a later time or --in."""
    past = (datetime.now() - timedelta(minutes=1)).strftime("%H:%M:%S")
    if past > datetime.now().strftime("%H:%M:%S"):  # just after midnight: a minute ago was yesterday
        past = "00:00:00"
    assert main(["start", "--at", past, "--server", f"http://127.0.0.1:{free_port()}", "--token", "t" * 20]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"unisono start: {past} is in the past (it is ")
    assert err.endswith("now): give a later time, or use --in\n")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --in, or start with neither --in nor --at, is a usage error (exit 2)."""
    for argv in (["start", "--in", "soon"], ["start"], ["start", "--in", "10s", "--at", "21:00"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "argument --in: expected a duration like 10s" in capsys.readouterr().err


# -- commands against a real server ---------------------------------------------------


async def cli(server: RunningServer, *argv: str, token: str | None = None) -> int:
    """`unisono ARGV --server ... --token ...` in a thread, while the server serves on this loop."""
    return await asyncio.to_thread(main, [*argv, "--server", server.base_url, "--token", token or server.token])


def show_state(server: RunningServer) -> str:
    """The hub's show state now (a call, so that mypy does not narrow it across awaits)."""
    return server.hub.show.state


async def test_start_in_then_reschedule_then_abort(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """start --in 10s schedules the show 10 s ahead, reschedule moves it, abort returns to idle; each says so."""
    assert await cli(server, "start", "--in", "10s") == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"Show scheduled: starts at \d\d:\d\d:\d\d( \S+)? \(in (9\.\d|10\.0) s\), epoch \d+\n", out), out
    assert show_state(server) == "scheduled"
    start_ns = server.hub.show.snapshot.start_ns
    assert await cli(server, "reschedule", "--in", "1m") == 0
    assert re.search(r"Show rescheduled: starts at .* \(in (59\.\d|60\.0) s\)", capsys.readouterr().out)
    assert server.hub.show.snapshot.start_ns is not None and start_ns is not None
    assert 49 < (server.hub.show.snapshot.start_ns - start_ns) / 1e9 < 51
    assert await cli(server, "abort") == 0
    assert capsys.readouterr().out.startswith("Show aborted: idle, epoch ")
    assert show_state(server) == "idle"


async def test_start_at_a_later_time_today(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """start --at HH:MM:SS schedules at that local time (sent with the local offset)."""
    later = datetime.now().astimezone() + timedelta(seconds=30)
    if later.date() != datetime.now().date():
        pytest.skip("too close to midnight for a time of day later today")
    assert await cli(server, "start", "--at", later.strftime("%H:%M:%S")) == 0
    assert f"starts at {later.strftime('%H:%M:%S')}" in capsys.readouterr().out
    assert server.hub.show.snapshot.start_ns is not None
    assert abs(server.hub.show.snapshot.start_ns / 1e9 - later.replace(microsecond=0).timestamp()) < 0.001


async def test_events_name_the_cli(server: RunningServer) -> None:
    """The event log says the start came from the CLI (X-Unisono-Client: cli)."""
    assert await cli(server, "start", "--in", "30s") == 0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/api/events", headers={"Authorization": f"Bearer {server.token}"}) as response:
            events = (await response.json())["events"]
    starts = [event for event in events if event["action"] == "start"]
    assert starts and starts[-1]["who"].startswith("cli")


async def test_abort_when_idle_says_why(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Abort with nothing scheduled exits 1 with the server's invalid_state message."""
    assert await cli(server, "abort") == 1
    err = capsys.readouterr().err
    assert err.startswith("unisono abort: ") and "HTTP" not in err
    assert "idle" in err


async def test_status_table(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """status prints the title, the state, a row per group and the funnel; --json the raw answer."""
    assert await cli(server, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Test show: idle, epoch 0" or lines[0].startswith("Test show: idle, epoch ")
    assert any(line.startswith("red ") for line in lines) and any(line.startswith("blue ") for line in lines)
    assert any(line.startswith("all ") for line in lines)
    assert "error bounds" in lines
    assert await cli(server, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status["groups"]) == {"red", "blue"} and status["show"]["state"] == "idle"


async def test_announce_joins_the_words(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """announce sends its words as one text to every device, and says to how many."""
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=None, client="cli-test")))
        assert await cli(server, "announce", "Doors", "open", "at", "8") == 0
        assert capsys.readouterr().out == "Announcement sent to 1 device.\n"
        while True:
            data = await asyncio.wait_for(ws.recv(), scaled(5))
            assert isinstance(data, bytes)
            message = decode(data, SERVER_TO_PARTICIPANT, 2**20)
            if isinstance(message, Announcement):
                break
    assert message.text == "Doors open at 8"


class Terminal(io.StringIO):
    """Typed answers on a standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True


async def test_not_ready_needs_yes_or_an_answer(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too few devices ready: without a TTY start asks for --yes, --yes starts; on a TTY it asks, and starts on y only."""
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=None, client="cli-test")))
        while not server.hub.devices:
            await asyncio.sleep(0.01)
        assert await cli(server, "start", "--in", "10s") == 1
        err = capsys.readouterr().err
        assert "run `unisono start` again with --yes to start anyway" in err
        assert show_state(server) == "idle"
        assert await cli(server, "start", "--in", "10s", "--yes") == 0
        assert capsys.readouterr().out.startswith("Show scheduled: ")
        assert show_state(server) == "scheduled"
        assert await cli(server, "abort") == 0
        capsys.readouterr()

        monkeypatch.setattr("sys.stdin", Terminal("n\n"))
        assert await cli(server, "start", "--in", "10s") == 1
        out, err = capsys.readouterr()
        assert out == "Start anyway? [y/N] " and err.endswith("unisono start: not started\n")
        assert show_state(server) == "idle"
        monkeypatch.setattr("sys.stdin", Terminal("y\n"))
        assert await cli(server, "start", "--in", "10s") == 0
        assert capsys.readouterr().out.startswith("Start anyway? [y/N] Show scheduled: ")
        assert show_state(server) == "scheduled"


async def test_wrong_token_says_what_to_do(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong token exits 1 saying to run `unisono token` on the server machine or pass --token."""
    assert await cli(server, "status", token="wrong-token-0123456789") == 1
    assert capsys.readouterr().err == (
        "unisono status: the server refused the token: run `unisono token` on the server machine, or pass --token\n"
    )


async def test_too_soon_and_bad_text_show_the_servers_message(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A 400 answer prints the server's own message (too long an announcement), exit 1."""
    assert await cli(server, "announce", "x" * 501) == 1
    err = capsys.readouterr().err
    assert err.startswith("unisono announce: ") and "HTTP" not in err


async def test_a_server_without_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A web server that is not Unisono's API (plain 404, 500) gets the HTTP status and a hint, not a traceback."""
    from aiohttp import web

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Traceback: boom")

    app = web.Application()
    app.router.add_get("/api/status", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        assert await asyncio.to_thread(main, ["abort", "--server", url, "--token", "t" * 20]) == 1
        assert capsys.readouterr().err == (
            f"unisono abort: {url}/api/abort answered HTTP 404 Not Found: "
            "is --server a Unisono server with the organizer API?\n"
        )
        assert await asyncio.to_thread(main, ["status", "--server", url, "--token", "t" * 20]) == 1
        assert capsys.readouterr().err == "unisono status: the server failed: HTTP 500 Internal Server Error: Traceback: boom\n"
    finally:
        await runner.cleanup()
