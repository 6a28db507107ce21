"""The page's Player joins a segmented track 150 s in: past the first two minutes it decoded while loading.

player.js is driven directly in Chromium, with a schedule that started 150 s
ago and an exact clock estimate (server time = device time). The start falls
in segment 7 (140-160 s), which load() did not decode: the player must decode
from there, start inside it at the right sample, and hold only the segments
from the playing one to two minutes ahead.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy
import pytest
from playwright.async_api import Browser

from server.hub import ShowSpec
from server.prepare import prepare_track
from tests.conftest import scaled, start_server

pytestmark = pytest.mark.browser

RATE = 48000
TRACK_S = 180
JOIN_S = 150

SETUP = """
async ([url, joinS]) => {
  const { Player } = await import('/js/player.js');
  const starts = [];
  const realStart = AudioBufferSourceNode.prototype.start;
  AudioBufferSourceNode.prototype.start = function (when, offset, duration) {
    starts.push({ when, offset, duration });
    return realStart.apply(this, arguments);
  };
  const player = new Player();
  window.__test = { player, starts };
  await player.load(url);
  const nowUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
  player.setEstimate({ at_us: nowUs, offset_us: 0, rate_ppm: 0, bound_us: 100, bound_growth_ppm: 0 });
  player.setSchedule({ epoch: 1, state: 'playing', start_us: nowUs - joinS * 1e6 });
  const button = document.createElement('button');
  button.id = 'tap';
  button.textContent = 'tap';
  button.onclick = () => player.unlock();
  document.body.append(button);
  setInterval(() => player.correctDrift(), 200);
  return [...player.track.decoded.keys()];
}
"""


def quiet_tone_wav(path: Path) -> Path:
    t = numpy.arange(TRACK_S * RATE) / RATE
    ints = (0.2 * numpy.sin(2 * numpy.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(ints.tobytes())
    return path


async def test_join_past_the_decoded_window_decodes_from_there_and_starts_inside_the_segment(browser: Browser, tmp_path: Path) -> None:
    """Joining at 150 s: segment 7 decoded on demand, the first source inside it at the right sample, only 7-8+ held."""
    manifest = prepare_track(quiet_tone_wav(tmp_path / "long.wav"), tmp_path / "tracks", stem="long")
    show = ShowSpec(title="Long", tracks={"red": tmp_path / "tracks" / "long.json"}, duration_ns=int(manifest.duration_s * 1e9))
    runner, server = await start_server(tmp_path, show)
    try:
        page = await (await browser.new_context()).new_page()
        page.on("console", lambda msg: print(f"[page] {msg.text}"))
        await page.goto(server.base_url + "/healthz")
        decoded_at_load = await page.evaluate(SETUP, ["/tracks/long.json", JOIN_S])
        assert decoded_at_load == [0], decoded_at_load  # load() returns once the first segment is decoded
        # ... and goes on decoding two minutes from 0 in the background: segments 0-6 (0-140 s).
        await page.wait_for_function("() => window.__test.player.track.decoded.size === 7", timeout=scaled(20) * 1000)
        await page.click("#tap")
        await page.wait_for_function("() => window.__test.player.start !== null", timeout=scaled(20) * 1000)
        start = await page.evaluate("() => window.__test.player.start")
        starts = await page.evaluate("() => window.__test.starts.filter((s) => s.offset !== undefined && s.offset !== null)")
        decoded = await page.evaluate("() => [...window.__test.player.track.decoded.keys()].sort((a, b) => a - b)")
        print(f"start {start}; first source {starts[0]}; decoded {decoded}")
        assert JOIN_S < start["offsetS"] < JOIN_S + 10
        frame = int(start["offsetS"] * RATE + 1e-9)
        segment = manifest.segments[7]
        assert segment.first_frame <= frame < segment.first_frame + segment.frames
        # Chromium trims the MP3 priming exactly: the marker is at 0 (chain.js finds it).
        assert abs(starts[0]["offset"] - (segment.own_offset + frame - segment.first_frame) / RATE) < 0.5 / RATE
        assert abs(starts[0]["duration"] - (segment.first_frame + segment.frames - frame) / RATE) < 0.5 / RATE
        assert abs(starts[0]["when"] - start["contextWhen"]) <= 1.0 / RATE
        # Segments before the playing one were released; nothing beyond two minutes ahead is held.
        assert decoded and decoded[0] == 7 and decoded[-1] <= 8 + 1, decoded
    finally:
        await runner.cleanup()
