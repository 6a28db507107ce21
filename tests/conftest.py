"""Shared fixtures: a real server on 127.0.0.1:0 with a small two-group show."""

from __future__ import annotations

import logging
import os
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from server.app import HUB, make_app
from server.config import ServerConfig
from server.hub import Hub, ShowSpec
from server.logs import UNISONO_HANDLER


@pytest.fixture(autouse=True)
def _no_log_handler_left_behind() -> object:
    """Remove the handler ``unisono serve`` installs when a test ran the CLI in-process.

    It writes to the ``sys.stderr`` of its moment, a capture that pytest closes
    after the test: a later test's log line then printed "--- Logging error ---"
    into whatever that test captured (test_commands caught it after test_tls).
    """
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, UNISONO_HANDLER)]:
        root.removeHandler(handler)
        handler.close()

# Slow machines (CI under load) may scale every timeout in the tests.
TIMEOUT_SCALE = float(os.environ.get("UNISONO_TIMEOUT_SCALE", "1"))
TEST_TOKEN = "test-organizer-token-0123456789"


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


def write_tone_wav(path: Path, seconds: float, sample_rate: int = 8000) -> Path:
    """A short silent mono WAV: enough for the server to know the track's length."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(b"\x00\x00" * int(seconds * sample_rate))
    return path


@dataclass
class RunningServer:
    base_url: str
    ws_url: str
    organizer_url: str
    hub: Hub
    token: str


# The cues of small_show, as track positions in seconds: each group has its own.
SMALL_SHOW_CUES = {"red": (0.5, 1.5), "blue": (1.0, 2.0)}
SMALL_SHOW_TOML = """\
title = "Test show"

[description]
when_en = "Now"
when_fr = "Maintenant"
where_en = "Here"
where_fr = "Ici"
bring_en = "A phone"
bring_fr = "Un téléphone"
text_en = "A test of cues."
text_fr = "Un essai des consignes."

[[groups]]
name = "red"
track = "red.wav"

[[groups.cues]]
at = 0.5
text_en = "red one"
text_fr = "rouge un"
colour = "#ff0000"
vibrate = [100, 50, 100]

[[groups.cues]]
at = 1.5
text_en = "red two"
text_fr = "rouge deux"

[[groups]]
name = "blue"
track = "blue.wav"

[[groups.cues]]
at = 1.0
text_en = "blue one"
text_fr = "bleu un"
colour = "#0000ff"

[[groups.cues]]
at = 2.0
text_en = "blue two"
text_fr = "bleu deux"
"""


def small_show(directory: Path, seconds: float = 3.0) -> ShowSpec:
    """Two groups, red and blue, of silent ``seconds``-long tracks, each with two cues, from a show file."""
    from server.showfile import load_show

    for group in ("red", "blue"):
        write_tone_wav(directory / f"{group}.wav", seconds)
    path = directory / "show.toml"
    path.write_text(SMALL_SHOW_TOML, encoding="utf-8")
    return ShowSpec.from_file(load_show(path))


async def start_server(tmp_path: Path, show: ShowSpec, **config: object) -> tuple[web.AppRunner, RunningServer]:
    cfg = ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "var", organizer_token=TEST_TOKEN, **config)  # type: ignore[arg-type]
    app = make_app(cfg, show)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    ws = f"ws://127.0.0.1:{port}"
    return runner, RunningServer(base, f"{ws}/ws", f"{ws}/ws/organizer", app[HUB], TEST_TOKEN)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    runner, running = await start_server(tmp_path, small_show(tmp_path))
    yield running
    await runner.cleanup()


@pytest.fixture(scope="session")
def kernel_stamps_on() -> Iterator[None]:
    """Linux turns packet receive stamps on for the whole system when the first socket asks for them, a moment
    later (a deferred static key): until then packets come unstamped and a reader falls back to its read time.
    A server that has run a while always has them on; a test that checks kernel stamps turns them on first."""
    import socket
    import time

    from server.connection import SO_TIMESTAMPNS

    keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if SO_TIMESTAMPNS is not None:
            keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            time.sleep(0.2)
        yield
    finally:
        keeper.close()
