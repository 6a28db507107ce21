"""prepare_track: any common input in, MP3 segments that tile the track and chain to the frame, bounded memory, size budget."""

from __future__ import annotations

import json
import tracemalloc
import wave
from pathlib import Path

import av
import numpy
import pytest

from server.prepare import (
    MARKER,
    PrepareError,
    encode_mp3,
    load_manifest,
    marker_pcm,
    prepare_track,
)

RATE = 48000


def sweep(frames: int, rate: int = RATE, channels: int = 2) -> numpy.ndarray:
    """A 100 Hz - 6 kHz sine sweep, the right channel at half level: every join lands on a different frequency."""
    t = numpy.arange(frames) / rate
    seconds = frames / rate
    one = 0.4 * numpy.sin(2 * numpy.pi * (100 * t + (6000 - 100) * t * t / (2 * seconds)))
    return numpy.stack([one, 0.5 * one][:channels]).astype(numpy.float32)


def write_wav(path: Path, pcm: numpy.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((pcm.T * 32767).astype("<i2").tobytes())
    return path


def write_encoded(path: Path, pcm: numpy.ndarray, codec: str, rate: int = RATE) -> Path:
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        for at in range(0, pcm.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(numpy.ascontiguousarray(pcm[:, at : at + 4096]), format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = at
            for converted in av.AudioResampler(format=fmt, layout=layout, rate=rate).resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def decode(path: Path) -> numpy.ndarray:
    """The whole file as float32 (channels, frames), at its own rate (FFmpeg trims MP3 priming from the LAME tag)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        planar = av.AudioResampler(format="fltp", layout=layout, rate=stream.codec_context.sample_rate)
        frames = [out.to_ndarray() for f in container.decode(stream) for out in planar.resample(f)]
        frames += [out.to_ndarray() for out in planar.resample(None)]
        return numpy.concatenate(frames, axis=1)


def own_audio(path: Path, own_offset: int, frames: int) -> numpy.ndarray:
    """A segment's own frames, located as the page does: the marker's correlation peak + own_offset."""
    pcm = decode(path)
    marker = marker_pcm(RATE, 1)[0]
    lead = int(numpy.argmax(numpy.correlate(pcm[0, : 4096 + marker.size], marker, "valid")))
    return pcm[:, lead + own_offset : lead + own_offset + frames]


def check_tiling(manifest_path: Path) -> dict[str, object]:
    data = json.loads(manifest_path.read_text())
    next_first = 0
    for segment in data["segments"]:
        assert segment["first_frame"] == next_first
        assert segment["file_first_frame"] <= segment["first_frame"]
        assert segment["first_frame"] + segment["frames"] <= segment["file_first_frame"] + segment["file_frames"]
        head = MARKER["frames"] + data["marker_gap"]
        assert segment["own_offset"] == head + segment["first_frame"] - segment["file_first_frame"]
        assert (manifest_path.parent / segment["url"]).stat().st_size == segment["bytes"]
        next_first += segment["frames"]
    assert next_first == data["frames"]
    return data


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [(".wav", None), (".flac", "flac"), (".mp3", "libmp3lame"), (".m4a", "aac"), (".ogg", "libopus")],
)
def test_common_formats_become_segments_that_tile_the_track(tmp_path: Path, suffix: str, codec: str | None) -> None:
    """WAV, FLAC, MP3, M4A/AAC and Ogg/Opus inputs give a manifest whose segments tile the decoded length."""
    pcm = sweep(3 * RATE)
    source = tmp_path / f"in{suffix}"
    write_wav(source, pcm) if codec is None else write_encoded(source, pcm, codec)
    manifest = prepare_track(source, tmp_path / "out", stem="t", segment_frames=RATE)
    data = check_tiling(tmp_path / "out" / "t.json")
    assert data["sample_rate"] == RATE and data["channels"] == 2 and data["codec"] == "mp3"
    # Lossy inputs decode to the original length give or take their codec's trimming.
    assert abs(manifest.frames - pcm.shape[1]) <= 2048, manifest.frames
    assert len(manifest.segments) == -(-manifest.frames // RATE)
    assert load_manifest(tmp_path / "out" / "t.json") == manifest


def test_resamples_and_keeps_mono(tmp_path: Path) -> None:
    """A 44.1 kHz mono WAV becomes 48 kHz mono segments of the resampled length."""
    source = write_wav(tmp_path / "in.wav", sweep(2 * 44100, rate=44100, channels=1), rate=44100)
    manifest = prepare_track(source, tmp_path / "out", segment_frames=RATE // 2)
    assert manifest.channels == 1 and manifest.sample_rate == RATE
    assert abs(manifest.frames - 2 * RATE) <= 2, manifest.frames
    check_tiling(tmp_path / "out" / "in.json")


def test_chained_own_audio_matches_the_source_at_every_join(tmp_path: Path) -> None:
    """Own ranges located by the marker, stitched, match the source: zero shift at every join, codec noise only."""
    pcm = sweep(5 * RATE + 321)
    manifest = prepare_track(write_wav(tmp_path / "in.wav", pcm), tmp_path / "out", segment_frames=RATE)
    reference = decode(tmp_path / "in.wav").astype(numpy.float32)
    stitched = numpy.concatenate(
        [own_audio(tmp_path / "out" / s.url, s.own_offset, s.frames) for s in manifest.segments], axis=1
    )
    assert stitched.shape == reference.shape
    for segment in manifest.segments[1:]:
        join = segment.first_frame
        window = slice(join - 1024, join + 1024)
        got, want = stitched[0, window], reference[0, window]
        lags = numpy.arange(-8, 9)
        scores = [numpy.dot(numpy.roll(got, lag), want) for lag in lags]
        assert lags[int(numpy.argmax(scores))] == 0, (join, scores)
        noise = numpy.sqrt(numpy.mean((got - want) ** 2)) / numpy.sqrt(numpy.mean(want**2))
        assert noise < 0.1, (join, noise)  # 96 kbps MP3 of a sweep: ~-26 dB


def test_bad_input_raises_prepare_error(tmp_path: Path) -> None:
    """A file that is not audio gives PrepareError naming it."""
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    with pytest.raises(PrepareError, match="notes.txt"):
        prepare_track(bad, tmp_path / "out")


def test_long_track_in_bounded_memory_within_the_size_budget(tmp_path: Path) -> None:
    """Five minutes in: peak Python memory stays far below the decoded track; bytes <= 96 kbps MP3 + 10 %."""
    seconds = 300
    source = tmp_path / "long.wav"
    with wave.open(str(source), "wb") as out:  # written a minute at a time: the test holds no whole track either
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        for minute in range(seconds // 60):
            out.writeframes((sweep(60 * RATE).T * 32767).astype("<i2").tobytes())
    decoded_bytes = seconds * RATE * 2 * 4  # float32 stereo
    tracemalloc.start()
    try:
        manifest = prepare_track(source, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak {peak / 1e6:.1f} MB for {decoded_bytes / 1e6:.0f} MB decoded")
    assert manifest.frames == seconds * RATE
    assert peak < decoded_bytes / 8, peak
    total = sum(s.bytes for s in manifest.segments)
    # The same audio as one 96 kbps MP3 from the same encoder, minute by minute.
    one = tmp_path / "one.mp3"
    encode_mp3(numpy.concatenate([sweep(60 * RATE)] * (seconds // 60), axis=1), one, RATE)
    print(f"segments {total} bytes, one 96 kbps MP3 {one.stat().st_size} bytes: {total / one.stat().st_size:.3f}")
    assert total <= 1.10 * one.stat().st_size
    assert total <= 1.10 * 96_000 / 8 * seconds * 1.01


def test_track_duration_of_a_manifest_and_of_an_audio_file(tmp_path: Path) -> None:
    """track_duration_ns reads a manifest's frames and counts an audio file's."""
    from server.prepare import track_duration_ns

    source = write_wav(tmp_path / "in.wav", sweep(RATE + 480))
    prepare_track(source, tmp_path / "out", segment_frames=RATE // 2)
    assert track_duration_ns(tmp_path / "out" / "in.json") == 1_010_000_000
    assert track_duration_ns(source) == 1_010_000_000


def test_command_line_prepares_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """python -m server.prepare SOURCE --out DIR writes the manifest and prints its figures; a bad file exits 1."""
    from server.prepare import main

    source = write_wav(tmp_path / "song.wav", sweep(2 * RATE))
    assert main([str(source), "--out", str(tmp_path / "out"), "--segment-s", "0.5"]) == 0
    assert "song.json: 2.0 s, 4 segments" in capsys.readouterr().out
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 1


def test_manifest_with_a_path_in_a_segment_url_is_refused(tmp_path: Path) -> None:
    """A segment url that is not a plain file name (../, /) is refused: the server would serve it."""
    prepare_track(write_wav(tmp_path / "in.wav", sweep(RATE)), tmp_path / "out", segment_frames=RATE // 2)
    path = tmp_path / "out" / "in.json"
    data = json.loads(path.read_text())
    for bad in ("../secret.mp3", "/etc/passwd", "sub/x.mp3"):
        data["segments"][1]["url"] = bad
        path.write_text(json.dumps(data))
        with pytest.raises(PrepareError, match=r"segments\[1\]\.url"):
            load_manifest(path)


def test_prepare_tracks_once_per_source_with_distinct_stems(tmp_path: Path) -> None:
    """prepare_tracks prepares each source once, gives same-named sources distinct stems, and skips fresh manifests."""
    from server.prepare import prepare_tracks

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_wav(tmp_path / "a" / "song.wav", sweep(RATE // 2))
    two = write_wav(tmp_path / "b" / "song.wav", sweep(RATE // 2))
    out = tmp_path / "out"
    manifests = prepare_tracks([one, two, one], out)
    assert manifests == {one: out / "song.json", two: out / "song-2.json"}
    stamp = (out / "song.json").stat().st_mtime_ns
    prepare_tracks([one], out)
    assert (out / "song.json").stat().st_mtime_ns == stamp
