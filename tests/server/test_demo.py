"""The demo show's generated tracks: format, beat grid, determinism, caching."""

from __future__ import annotations

import pathlib
import wave

import numpy
import numpy.typing as npt
import pytest

from server import demo

BEAT_SAMPLES = round(demo.BEAT_PERIOD_S * demo.DEMO_SAMPLE_RATE)  # 22050 at 44.1 kHz
ONE_MS_SAMPLES = demo.DEMO_SAMPLE_RATE // 1000


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return demo.ensure_demo_tracks(tmp_path_factory.mktemp("demo"))


def read_wav(path: pathlib.Path) -> tuple[wave._wave_params, npt.NDArray[numpy.int16]]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        frames = wav.readframes(params.nframes)
    return params, numpy.frombuffer(frames, dtype="<i2").astype(numpy.int16)


def onsets(samples: npt.NDArray[numpy.int16], sample_rate: int) -> npt.NDArray[numpy.int64]:
    """Sample indices where the short-window energy of the signal's slope jumps.

    The first difference weights the kHz clicks far above the bed's low notes. An
    onset is where the mean energy of the next 0.5 ms exceeds 20 times that of the
    previous 20 ms and 5 % of the track's loudest 0.5 ms (the bed's own swells stay
    under 3 %, the softest click is above 12 %). A click starting at sample s is
    found in (s - 0.5 ms, s], so spacings are exact to better than 1 ms.
    """
    short = sample_rate // 2000
    long = sample_rate // 50
    slope = numpy.diff(samples.astype(numpy.float64), prepend=0.0)
    energy = numpy.concatenate([numpy.zeros(long), slope**2, numpy.zeros(short)])
    cumulative = numpy.concatenate([[0.0], numpy.cumsum(energy)])
    index = numpy.arange(long, long + len(samples))
    ahead = (cumulative[index + short] - cumulative[index]) / short
    behind = (cumulative[index] - cumulative[index - long]) / long
    hot = numpy.flatnonzero((ahead > 20 * behind) & (ahead > 0.05 * ahead.max()))
    found: list[int] = []
    for i in hot:
        if not found or i - found[-1] > 0.2 * sample_rate:  # one onset per click
            found.append(int(i))
    return numpy.array(found, dtype=numpy.int64)


def test_files_are_valid_wavs_of_the_demo_format(tracks: dict[str, pathlib.Path]) -> None:
    """Each group gets demo-<group>.wav: 44.1 kHz, mono, 16-bit, at least 2 minutes."""
    assert set(tracks) == {"red", "blue"}
    for group, path in tracks.items():
        assert path.name == f"demo-{group}.wav"
        params, samples = read_wav(path)
        assert params.framerate == 44100
        assert params.nchannels == 1
        assert params.sampwidth == 2
        assert params.nframes / params.framerate >= 120
        assert len(samples) == params.nframes


def test_files_hold_exactly_what_render_track_returns(tracks: dict[str, pathlib.Path]) -> None:
    """The written samples are render_track's samples, byte for byte."""
    for group, path in tracks.items():
        _, samples = read_wav(path)
        numpy.testing.assert_array_equal(samples, demo.render_track(group))


def test_tracks_differ(tracks: dict[str, pathlib.Path]) -> None:
    """Red and blue are different audio, not a copy or a scaled copy."""
    _, red = read_wav(tracks["red"])
    _, blue = read_wav(tracks["blue"])
    assert not numpy.array_equal(red, blue)
    r, b = red.astype(numpy.float64), blue.astype(numpy.float64)
    correlation = numpy.dot(r, b) / numpy.sqrt(numpy.dot(r, r) * numpy.dot(b, b))
    assert abs(correlation) < 0.5


def test_render_is_deterministic() -> None:
    """Rendering a group twice gives identical samples."""
    for group in demo.DEMO_GROUPS:
        first = demo.render_track(group, duration_s=10.0)
        second = demo.render_track(group, duration_s=10.0)
        assert first.dtype == numpy.int16
        numpy.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("group", demo.DEMO_GROUPS)
def test_clicks_fall_on_the_beat_grid(group: str, tracks: dict[str, pathlib.Path]) -> None:
    """Every 500 ms beat, from t = 0 to the end, has one click and there are no others."""
    params, samples = read_wav(tracks[group])
    found = onsets(samples, params.framerate)
    expected_beats = -(-params.nframes // BEAT_SAMPLES)  # beats that start inside the track
    assert len(found) == expected_beats
    spacing = numpy.diff(found)
    assert numpy.all(numpy.abs(spacing - BEAT_SAMPLES) <= ONE_MS_SAMPLES)
    grid = numpy.arange(expected_beats) * BEAT_SAMPLES
    assert numpy.all(numpy.abs(found - grid) <= ONE_MS_SAMPLES)


@pytest.mark.parametrize(("group", "accented"), [("red", {0}), ("blue", {1, 3})])
def test_accents_follow_each_groups_pattern(
    group: str, accented: set[int], tracks: dict[str, pathlib.Path]
) -> None:
    """Red accents each bar's first beat; blue accents beats 2 and 4 of the same grid."""
    _, samples = read_wav(tracks[group])
    n_beats = len(samples) // BEAT_SAMPLES
    slope = numpy.abs(numpy.diff(samples.astype(numpy.int32), prepend=0))
    window = 10 * ONE_MS_SAMPLES
    # The click's steepest slope: the bed's low notes barely move it.
    peaks = numpy.array(
        [slope[k * BEAT_SAMPLES : k * BEAT_SAMPLES + window].max() for k in range(n_beats)]
    )
    is_accent = numpy.isin(numpy.arange(n_beats) % 4, list(accented))
    assert peaks[~is_accent].max() < 0.8 * peaks[is_accent].min()


def test_no_clipping(tracks: dict[str, pathlib.Path]) -> None:
    """No sample reaches full scale."""
    for path in tracks.values():
        _, samples = read_wav(path)
        assert numpy.max(numpy.abs(samples.astype(numpy.int32))) < 32767


def test_second_call_leaves_current_files_alone(tmp_path: pathlib.Path) -> None:
    """Calling ensure_demo_tracks again rewrites nothing: the files keep their mtime."""
    first = demo.ensure_demo_tracks(tmp_path)
    mtimes = {group: path.stat().st_mtime_ns for group, path in first.items()}
    second = demo.ensure_demo_tracks(tmp_path)
    assert second == first
    assert {group: path.stat().st_mtime_ns for group, path in second.items()} == mtimes


def test_outdated_or_damaged_file_is_rewritten(tmp_path: pathlib.Path) -> None:
    """A track whose sidecar names another generator version, or that was truncated, is rendered again."""
    paths = demo.ensure_demo_tracks(tmp_path)
    red, blue = paths["red"], paths["blue"]
    expected = {group: path.read_bytes() for group, path in paths.items()}
    sidecar = red.with_name(red.name + ".json")
    sidecar.write_text(sidecar.read_text().replace('"generator_version": ', '"generator_version": 1000'))
    blue.write_bytes(expected["blue"][:1000])
    demo.ensure_demo_tracks(tmp_path)
    assert red.read_bytes() == expected["red"]
    assert blue.read_bytes() == expected["blue"]


def test_directory_is_created_and_no_temporary_files_remain(tmp_path: pathlib.Path) -> None:
    """ensure_demo_tracks creates a missing directory and leaves only the tracks and sidecars."""
    directory = tmp_path / "nested" / "audio"
    demo.ensure_demo_tracks(directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "demo-blue.wav",
        "demo-blue.wav.json",
        "demo-red.wav",
        "demo-red.wav.json",
    ]


def test_unknown_group_is_rejected() -> None:
    """render_track raises ValueError naming the group it did not expect."""
    with pytest.raises(ValueError, match="green"):
        demo.render_track("green")
