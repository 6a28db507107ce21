"""Chromium chains decoded MP3 segments exactly as the page does and they match the source in one piece.

A sweep is made in the test, prepared into 2 s segments by server.prepare and
served by the real server. In headless Chromium, chain.js (the page's own
glue) fetches and decodes every segment, locates each one's own audio by its
marker and schedules the chain of sources, here into an OfflineAudioContext;
the rendered audio is compared with the source around every join: the shift
found by cross-correlation must be 0 samples (a gap or overlap shows as a
shift), and the difference must be codec noise, not a click.
"""

from __future__ import annotations

import base64
import wave
from pathlib import Path

import numpy
import pytest
from aiohttp import web
from playwright.async_api import Browser

from server.hub import ShowSpec
from server.prepare import Manifest, prepare_track
from tests.conftest import RunningServer, start_server

pytestmark = pytest.mark.browser

RATE = 48000
SEGMENT_FRAMES = 2 * RATE
TRACK_FRAMES = 9 * RATE + 12345

# Runs in the page: chain the segments of the manifest at `url` from track
# position `startS` into an OfflineAudioContext, return channel 0 (float32,
# base64) and where the chain's first source started.
RENDER = """
async ([url, startS, frames, rate, contextRate]) => {
  const { SegmentedTrack, fetchManifest } = await import('/js/chain.js');
  const manifest = await fetchManifest(url);
  const track = new SegmentedTrack(manifest, new URL(url, location.href).href, { onError: (e) => { throw e; } });
  await track.prepare(startS, { readyAheadS: 1e6 });
  const offline = new OfflineAudioContext(manifest.channels, frames, contextRate || manifest.sample_rate);
  const timeline = [{ contextS: 0, positionS: startS, rate }];
  track.start(offline, offline.destination, () => timeline, startS);
  const leads = [...track.decoded.values()].map((d) => d.lead);
  const rendered = await offline.startRendering();
  const bytes = new Uint8Array(rendered.getChannelData(0).buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { pcm: btoa(binary), leads, sources: track.chain ? track.chain.sources.length : 0 };
}
"""


def sweep_wav(path: Path) -> numpy.ndarray:
    """A 100 Hz - 8 kHz stereo sweep with a click every 0.25 s; returns channel 0 as the WAV holds it."""
    t = numpy.arange(TRACK_FRAMES) / RATE
    seconds = TRACK_FRAMES / RATE
    left = 0.3 * numpy.sin(2 * numpy.pi * (100 * t + (8000 - 100) * t * t / (2 * seconds)))
    left[RATE // 16 :: RATE // 4] += 0.5  # clicks off the joins: a join must not hide in a click's codec noise
    pcm = numpy.stack([left, -0.5 * left])
    ints = numpy.clip(pcm * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(ints.T.tobytes())
    return ints[0].astype(numpy.float32) / 32768


def shift_at(got: numpy.ndarray, want: numpy.ndarray, max_lag: int = 32) -> float:
    """The shift (samples, sub-sample by parabolic interpolation) that best aligns got with want."""
    lags = numpy.arange(-max_lag, max_lag + 1)
    core = slice(max_lag, len(want) - max_lag)
    scores = numpy.array([numpy.dot(got[core.start + lag : core.stop + lag], want[core]) for lag in lags])
    best = int(numpy.argmax(scores))
    if 0 < best < len(lags) - 1:
        a, b, c = scores[best - 1 : best + 2]
        return float(lags[best] + 0.5 * (a - c) / (a - 2 * b + c))
    return float(lags[best])


async def render(
    browser: Browser, base_url: str, start_s: float, frames: int, rate: float = 1.0, context_rate: int = RATE
) -> tuple[numpy.ndarray, dict[str, object]]:
    page = await (await browser.new_context()).new_page()
    page.on("console", lambda msg: print(f"[page] {msg.text}"))
    await page.goto(base_url + "/healthz")
    result = await page.evaluate(RENDER, ["/tracks/sweep.json", start_s, frames, rate, context_rate])
    return numpy.frombuffer(base64.b64decode(result["pcm"]), dtype=numpy.float32), result


async def serve_sweep(tmp_path: Path) -> tuple[numpy.ndarray, Manifest, web.AppRunner, RunningServer]:
    reference = sweep_wav(tmp_path / "sweep-source.wav")
    manifest = prepare_track(tmp_path / "sweep-source.wav", tmp_path / "tracks", stem="sweep", segment_frames=SEGMENT_FRAMES)
    show = ShowSpec(title="Sweep", tracks={"red": tmp_path / "tracks" / "sweep.json"}, duration_ns=int(manifest.duration_s * 1e9))
    runner, server = await start_server(tmp_path, show)
    return reference, manifest, runner, server


async def test_chained_segments_match_the_source_at_every_join(browser: Browser, tmp_path: Path) -> None:
    """From the start and from a late join inside segment 1, every join is shifted by 0 samples and clean."""
    reference, manifest, runner, server = await serve_sweep(tmp_path)
    try:
        late_frame = SEGMENT_FRAMES + 31_337  # inside segment 1, not on any boundary
        for start_frame in (0, late_frame):
            frames = TRACK_FRAMES - start_frame
            rendered, info = await render(browser, server.base_url, start_frame / RATE, frames)
            print(f"start at frame {start_frame}: markers found at leads {info['leads']}")
            want = reference[start_frame:]
            assert rendered.shape == want.shape
            # The chain's first sample is the start frame's.
            assert abs(shift_at(rendered[:4096], want[:4096], 16)) <= 1.0
            shifts: list[float] = []
            errors: list[float] = []
            # The codec's own error: twice the median over 128-sample windows of the largest |difference|.
            usable = len(want) // 128 * 128
            codec_error = 2 * float(numpy.median(numpy.abs(rendered[:usable] - want[:usable]).reshape(-1, 128).max(axis=1)))
            for segment in manifest.segments[1:]:
                join = segment.first_frame - start_frame
                if join <= 0:
                    continue
                # The 2048 samples after the join against the source (the ones before were checked at the previous join).
                window = slice(join - 32, join + 2048 + 32)
                shift = shift_at(rendered[window], want[window])
                shifts.append(round(shift, 3))
                assert abs(shift) <= 0.5, (segment.first_frame, shift)  # a one-sample gap or overlap would show as 1
                # Sample by sample: no larger than the codec's noise away from any join (a click would be).
                near = slice(join - 64, join + 64)
                error = float(numpy.abs(rendered[near] - want[near]).max())
                errors.append(round(error, 4))
                assert error <= codec_error, (segment.first_frame, error, codec_error)
            print(f"start at frame {start_frame}: shift at each join (samples) {shifts}, max |error| within 64 samples {errors}, bound (2x codec) {codec_error:.4f}")
            assert shifts, "no join was checked"
            # Nothing missing or doubled over the whole track either: the last click is where it should be.
            assert abs(shift_at(rendered[-RATE:], want[-RATE:])) <= 1.0
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("rate", "context_rate"), [(1.0005, RATE), (1.0, 44100)])
async def test_chain_stretched_or_resampled_stays_seamless(browser: Browser, tmp_path: Path, rate: float, context_rate: int) -> None:
    """At playbackRate 1.0005 (drift.js's clamp), or in a 44.1 kHz context, each join is where the stretched source has it."""
    reference, manifest, runner, server = await serve_sweep(tmp_path)
    step = rate * RATE / context_rate  # source frames per output frame
    try:
        frames = int(TRACK_FRAMES / step) - 64
        rendered, _ = await render(browser, server.base_url, 0.0, frames, rate, context_rate)
        # Output frame n is source frame n * step (Chromium interpolates linearly).
        want = numpy.interp(numpy.arange(frames) * step, numpy.arange(len(reference)), reference).astype(numpy.float32)
        shifts = []
        for segment in manifest.segments[1:]:
            join = int(round(segment.first_frame / step))
            window = slice(join - 32, join + 2048 + 32)
            shift = shift_at(rendered[window], want[window])
            shifts.append(round(shift, 3))
            assert abs(shift) <= 0.5, (segment.first_frame, shift)
        print(f"rate {rate}, context {context_rate} Hz: shift at each join (output samples) {shifts}")
    finally:
        await runner.cleanup()
