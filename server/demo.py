"""The demo show's audio, generated on the spot so ``unisono serve`` needs no download.

Each group's track is a click on every beat of one shared grid (120 BPM, a click
every 500 ms from t = 0) over a quiet musical bed. Two phones playing together
sound as one rhythm; a few milliseconds apart, every click flams, so sync and
drift can be heard without instruments.

- "red": a high ping (A6) on every beat, accented (louder, E7) on each bar's first
  beat; under it a soft pad with a bass line.
- "blue": a wood-block knock (C6, inharmonic overtone) on every beat, accented on
  beats 2 and 4 (the backbeat); under it an arpeggio an octave up.

Both beds follow the same chord progression, so the two groups sound well together.
Rendering is pure numpy with no randomness: the same samples every time.

The show around these tracks (title, description, cues) is server/demo_show.toml.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pathlib
import tempfile
import wave
from collections.abc import Callable

import numpy
import numpy.typing as npt

DEMO_GROUPS: tuple[str, ...] = ("red", "blue")
DEMO_DURATION_S: float = 150.0  # the brief: at least 2 minutes of show
DEMO_SAMPLE_RATE: int = 44100  # CD rate: every phone's audio stack plays it natively

# Bump whenever the rendered audio changes: ensure_demo_tracks() rewrites files whose
# sidecar names another version.
GENERATOR_VERSION = 1

BEAT_PERIOD_S = 0.5  # 120 BPM: slow enough to hear a 5 ms flam between two clicks
BEATS_PER_BAR = 4
BARS_PER_CHORD = 2  # a chord lasts 4 s: changes often enough to be music, not a drone

# A minor, F, C, G (vi-IV-I-V in C major) as MIDI note numbers, voice-led so that
# neighbouring chords share notes; the bass is each chord's root, low.
CHORDS_MIDI: tuple[tuple[int, int, int], ...] = (
    (57, 60, 64),
    (57, 60, 65),
    (55, 60, 64),
    (55, 59, 62),
)
BASS_MIDI: tuple[int, ...] = (45, 41, 48, 43)
# Blue's arpeggio, eighth notes over one bar: indices into the chord, 3 = root + 12.
ARPEGGIO_STEPS: tuple[int, ...] = (0, 1, 2, 3, 2, 1, 2, 1)

CLICK_LENGTH_S = 0.04  # long enough for the ring to decay below the bed
PEAK_FULL_SCALE = 0.8  # about -2 dBFS: well clear of clipping after int16 rounding

_SAMPLE_WIDTH_BYTES = 2  # 16-bit PCM
_Float = npt.NDArray[numpy.float64]


def render_track(
    group: str,
    duration_s: float = DEMO_DURATION_S,
    sample_rate: int = DEMO_SAMPLE_RATE,
) -> npt.NDArray[numpy.int16]:
    """Return ``group``'s track as int16 mono samples; raise ValueError for an unknown group.

    Beat ``k`` starts exactly at sample ``round(k * BEAT_PERIOD_S * sample_rate)``.
    """
    if group not in DEMO_GROUPS:
        raise ValueError(f"unknown demo group {group!r}, expected one of {DEMO_GROUPS}")
    if not duration_s > 0 or sample_rate <= 0:
        raise ValueError(
            f"expected duration_s > 0 and sample_rate > 0, got {duration_s!r}, {sample_rate!r}"
        )
    n_samples = int(round(duration_s * sample_rate))
    if group == "red":
        bed = _pad(n_samples, sample_rate) + _bass(n_samples, sample_rate)
        clicks = _clicks(n_samples, sample_rate, _red_click, accented_beats=(0,))
    else:
        bed = _arpeggio(n_samples, sample_rate)
        clicks = _clicks(n_samples, sample_rate, _blue_click, accented_beats=(1, 3))
    mix = bed * _bed_fade(n_samples, sample_rate) + clicks
    peak = float(numpy.max(numpy.abs(mix)))
    gain = PEAK_FULL_SCALE * 32767.0 / peak if peak > 0 else 0.0
    result: npt.NDArray[numpy.int16] = numpy.round(mix * gain).astype(numpy.int16)
    return result


def ensure_demo_tracks(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write ``<directory>/demo-<group>.wav`` for each group unless already current.

    A sidecar ``demo-<group>.wav.json`` records the generator version, format and
    file size; a file without a matching sidecar is rendered again. Each file is
    written to a temporary name and renamed, so a crash never leaves half a file.
    Returns group -> path to its WAV.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, pathlib.Path] = {}
    for group in DEMO_GROUPS:
        path = directory / f"demo-{group}.wav"
        sidecar = path.with_name(path.name + ".json")
        if not _is_current(path, sidecar):
            samples = render_track(group)
            _replace_atomically(path, _wav_bytes(samples, DEMO_SAMPLE_RATE))
            _replace_atomically(sidecar, json.dumps(_stamp(path)).encode())
        paths[group] = path
    return paths


def _stamp(path: pathlib.Path) -> dict[str, object]:
    return {
        "generator_version": GENERATOR_VERSION,
        "duration_s": DEMO_DURATION_S,
        "sample_rate": DEMO_SAMPLE_RATE,
        "size_bytes": path.stat().st_size,
    }


def _is_current(path: pathlib.Path, sidecar: pathlib.Path) -> bool:
    try:
        recorded = json.loads(sidecar.read_text())
        return bool(recorded == _stamp(path))
    except (OSError, ValueError):
        return False


def _replace_atomically(path: pathlib.Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise


def _wav_bytes(samples: npt.NDArray[numpy.int16], sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(_SAMPLE_WIDTH_BYTES)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def _hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69) / 12))


def _beat_start(beat: int, sample_rate: int) -> int:
    return int(round(beat * BEAT_PERIOD_S * sample_rate))


def _red_click(accent: bool, sample_rate: int) -> _Float:
    """A pure ping: sharp start, 4 ms decay."""
    t = numpy.arange(int(CLICK_LENGTH_S * sample_rate)) / sample_rate
    freq = _hz(100) if accent else _hz(93)  # E7 / A6
    amplitude = 1.0 if accent else 0.6
    return amplitude * numpy.sin(2 * numpy.pi * freq * t) * numpy.exp(-t / 0.004)


def _blue_click(accent: bool, sample_rate: int) -> _Float:
    """A wood-block knock: C6 plus the 2.76x overtone of a struck bar, 6 ms decay."""
    t = numpy.arange(int(CLICK_LENGTH_S * sample_rate)) / sample_rate
    freq = _hz(84)
    amplitude = 1.0 if accent else 0.55
    tone = numpy.sin(2 * numpy.pi * freq * t) + 0.5 * numpy.sin(2 * numpy.pi * 2.76 * freq * t)
    return amplitude * tone / 1.5 * numpy.exp(-t / 0.006)


def _clicks(
    n_samples: int,
    sample_rate: int,
    make_click: Callable[[bool, int], _Float],
    accented_beats: tuple[int, ...],
) -> _Float:
    """Put ``make_click(accent, sample_rate)`` on every beat; accented where ``beat % 4`` says."""
    out = numpy.zeros(n_samples)
    shapes = {accent: make_click(accent, sample_rate) for accent in (False, True)}
    beat = 0
    while (start := _beat_start(beat, sample_rate)) < n_samples:
        shape = shapes[beat % BEATS_PER_BAR in accented_beats]
        end = min(start + len(shape), n_samples)
        out[start:end] += shape[: end - start]
        beat += 1
    return out


def _chord_index(segment: int) -> int:
    return segment % len(CHORDS_MIDI)


def _segment_length_s() -> float:
    return BEAT_PERIOD_S * BEATS_PER_BAR * BARS_PER_CHORD


def _add_note(
    out: _Float,
    sample_rate: int,
    start_s: float,
    length_s: float,
    freq: float,
    amplitude: float,
    harmonics: tuple[float, ...],
    attack_s: float,
    release_s: float,
) -> None:
    """Add one note to ``out`` at ``start_s``, cut off at the end of ``out``."""
    start = int(round(start_s * sample_rate))
    if start >= len(out):
        return
    note = _note(sample_rate, length_s, freq, harmonics, attack_s, release_s)
    n = min(len(note), len(out) - start)
    out[start : start + n] += amplitude * note[:n]


@functools.lru_cache(maxsize=64)
def _note(
    sample_rate: int,
    length_s: float,
    freq: float,
    harmonics: tuple[float, ...],
    attack_s: float,
    release_s: float,
) -> _Float:
    """One note with raised-cosine attack and release: no sharp edge, so no false click.

    Cached: a bed repeats a handful of notes, and rendering each once keeps a
    150 s track well under a second.
    """
    t = numpy.arange(int(round((length_s + release_s) * sample_rate))) / sample_rate
    tone = numpy.zeros_like(t)
    for k, weight in enumerate(harmonics, start=1):
        if weight:
            tone += weight * numpy.sin(2 * numpy.pi * freq * k * t)
    envelope = numpy.ones_like(t)
    rise = t < attack_s
    envelope[rise] = 0.5 - 0.5 * numpy.cos(numpy.pi * t[rise] / attack_s)
    fall = t > length_s
    envelope[fall] *= 0.5 + 0.5 * numpy.cos(numpy.pi * (t[fall] - length_s) / release_s)
    note: _Float = envelope * tone
    note.flags.writeable = False
    return note


def _segments(n_samples: int, sample_rate: int) -> range:
    return range(int(numpy.ceil(n_samples / sample_rate / _segment_length_s())))


def _pad(n_samples: int, sample_rate: int) -> _Float:
    """Red's bed: the chord held for its 4 s, soft sines with a little 2nd and 3rd harmonic."""
    out = numpy.zeros(n_samples)
    length_s = _segment_length_s()
    for segment in _segments(n_samples, sample_rate):
        for midi in CHORDS_MIDI[_chord_index(segment)]:
            # Chords overlap by their 0.6 s attack/release: a crossfade, not a cut.
            _add_note(
                out, sample_rate, segment * length_s, length_s, _hz(midi), 0.045,
                harmonics=(1.0, 0.3, 0.1), attack_s=0.6, release_s=0.6,
            )
    return out


def _bass(n_samples: int, sample_rate: int) -> _Float:
    """Red's bass: each chord's root, an octave under the pad, held for the chord."""
    out = numpy.zeros(n_samples)
    length_s = _segment_length_s()
    for segment in _segments(n_samples, sample_rate):
        root = _hz(BASS_MIDI[_chord_index(segment)])
        _add_note(
            out, sample_rate, segment * length_s, length_s, root, 0.09,
            harmonics=(1.0, 0.4, 0.15), attack_s=0.3, release_s=0.3,
        )
    return out


def _arpeggio(n_samples: int, sample_rate: int) -> _Float:
    """Blue's bed: the chord's notes one at a time, in eighth notes."""
    out = numpy.zeros(n_samples)
    step_s = BEAT_PERIOD_S / 2
    steps_per_chord = BEATS_PER_BAR * BARS_PER_CHORD * 2
    n_steps = int(numpy.ceil(n_samples / sample_rate / step_s))
    for step in range(n_steps):
        chord = CHORDS_MIDI[_chord_index(step // steps_per_chord)]
        index = ARPEGGIO_STEPS[step % len(ARPEGGIO_STEPS)]
        midi = chord[0] + 12 if index == 3 else chord[index]
        # Odd harmonics (a soft triangle) an octave above the pad; a 25 ms attack keeps
        # the notes from reading as clicks between the beats.
        _add_note(
            out, sample_rate, step * step_s, step_s, _hz(midi + 12), 0.1,
            harmonics=(1.0, 0.0, 1 / 9, 0.0, 1 / 25), attack_s=0.025, release_s=0.2,
        )
    return out


def _bed_fade(n_samples: int, sample_rate: int) -> _Float:
    """Fade the bed in over the first second and out over the last four."""
    t = numpy.arange(n_samples) / sample_rate
    end_s = n_samples / sample_rate
    fade_in = numpy.clip(t / 1.0, 0.0, 1.0)
    fade_out = numpy.clip((end_s - t) / 4.0, 0.0, 1.0)
    result: _Float = fade_in * fade_out
    return result
