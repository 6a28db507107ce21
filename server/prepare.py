"""Cut a track into MP3 segments that a phone decodes one at a time and chains gaplessly.

``prepare_track(source, out_dir)`` decodes any input FFmpeg reads (MP3, M4A/AAC,
WAV, FLAC, Ogg/Opus, ...) with PyAV, streaming: at no time does it hold more
than one segment plus its overlaps decoded, so a one-hour track needs a few MB.
It resamples to one rate (``sample_rate``, 48 kHz by default: what most phone
outputs run at), keeps mono as mono and folds anything wider to stereo, and
writes ``<stem>-NNNNN.mp3`` segment files and ``<stem>.json``, the manifest.

Why MP3: every browser's ``decodeAudioData`` decodes it (Opus is missing from
older Safari, AAC from some Firefox builds). Why the overlap: an MP3 encoder
adds priming samples at the start of a file and padding at its end, and
browsers trim them inconsistently (from the LAME tag, partly, or not at all);
and the codec's transform smears the first and last ~1152 samples of a file
that starts or stops abruptly. So each segment file holds its own audio plus
``overlap_frames`` of the neighbouring audio on each side (the encoder sees
continuous music across the join), and the manifest says exactly which frames
of the file's content are the segment's own. To find them in the decoded
buffer whatever the browser trimmed, each file starts with a marker: a short
windowed chirp (defined in the manifest, never played), then silence, then
the pre-roll. The page finds the marker by cross-correlation (a sharp peak,
exact to the frame even through the codec), and the own audio starts
``own_offset`` frames after the marker's first frame (see
``clients/web/js/segments.js``). The page plays only that range, back to back
with ``AudioBufferSourceNode.start(when, offset, duration)``.

The manifest (JSON, every frame count at ``sample_rate``)::

    {
      "format": "unisono-segments", "version": 1,
      "codec": "mp3",
      "sample_rate": 48000,          # Hz, of every segment file
      "channels": 2,                 # 1 or 2
      "frames": 172800000,           # the whole track, in frames
      "encoder_delay": 576,          # priming frames the encoder put before the content (LAME tag)
      "decoder_delay": 529,          # frames an MP3 decoder adds before that (ISO 11172-3 synthesis)
      "marker": {"frames": 1152, "start_hz": 500.0, "end_hz": 8000.0, "amplitude": 0.5},
                                     # marker[i] = amplitude * hann(i) * sin(2 pi (start_hz i + (end_hz - start_hz) i^2 / (2 frames)) / sample_rate)
                                     # hann(i) = 0.5 - 0.5 cos(2 pi i / (frames - 1)), the same in every channel
      "marker_gap": 2304,            # silent frames between the marker and the pre-roll
      "segments": [
        {
          "url": "show-00000.mp3",   # relative to the manifest's URL
          "first_frame": 0,          # track frame of the segment's first own frame
          "frames": 960000,          # own frames: segments tile [0, frames) without gap or overlap
          "file_first_frame": 0,     # track frame of the file's first content frame (first_frame - pre-roll)
          "file_frames": 964608,     # content frames in the file: pre-roll + own + post-roll
          "own_offset": 8064,        # own audio starts this many frames after the marker's first frame:
                                     #   marker frames + marker_gap + (first_frame - file_first_frame)
          "padding": 1248,           # frames the encoder added after the content (LAME tag)
          "bytes": 115783            # size of the file
        }, ...
      ]
    }

The file's content is marker + gap + ``file_frames`` track frames. A decoder
that trims exactly (Chrome, Firefox, FFmpeg) puts the marker at frame 0; one
that trims nothing puts it ``encoder_delay + decoder_delay`` (+ 1152 if it
decodes the tag frame) later: the page searches the first
``MARKER_SEARCH_FRAMES`` frames.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy
import numpy.typing as npt

MANIFEST_FORMAT = "unisono-segments"
MANIFEST_VERSION = 1
# Most phone outputs run at 48 kHz; decoding at the output's rate avoids a resampling step.
DEFAULT_SAMPLE_RATE = 48000
# 20 s of audio per segment: a 96 kbps segment is ~240 kB, decoded stereo ~7.7 MB,
# so a phone holds two minutes ahead in six of them; the overlap costs 1 %.
DEFAULT_SEGMENT_FRAMES = 20 * DEFAULT_SAMPLE_RATE
# Pre-roll and post-roll of neighbouring audio in each file: 4 MP3 frames
# (96 ms at 48 kHz). Gapless MSE playback needs at least 1152 on each side
# (Dale Curtis, "Media Source Extensions for Audio", 2014); more gives the page
# room to confirm the join by cross-correlating the overlap.
DEFAULT_OVERLAP_FRAMES = 4 * 1152
# The brief's budget is a 96 kbps MP3 of the same audio (+10 %); encode at that
# rate and let the overlap (~1 %) and per-file headers (< 0.1 %) take the rest.
DEFAULT_BIT_RATE = 96_000
# LAME's MPEG-1 Layer III decoder delay (528 + 1 synthesis frames): FFmpeg and
# the LAME tag specification count it on top of the tag's encoder delay.
MP3_DECODER_DELAY = 529
MP3_FRAME_SIZE = 1152
# A segment file's name as the manifest gives it: one path component, no dot-dot.
SEGMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.mp3")
# The marker: one MP3 frame of a 500 Hz - 8 kHz chirp, under the 96 kbps
# encoder's ~15 kHz low-pass, broadband enough for a one-frame-sharp
# correlation peak; half scale so the encoder keeps it clean.
MARKER = {"frames": MP3_FRAME_SIZE, "start_hz": 500.0, "end_hz": 8000.0, "amplitude": 0.5}
# Silence after the marker, so its quantisation noise (a granule of 576 plus
# the transform's overlap) never reaches the pre-roll: two MP3 frames.
MARKER_GAP_FRAMES = 2 * MP3_FRAME_SIZE

_Pcm = npt.NDArray[numpy.float32]


class PrepareError(Exception):
    """The source cannot be prepared (no audio stream, unreadable, empty); the text says why."""


@dataclass(frozen=True)
class Segment:
    url: str
    first_frame: int
    frames: int
    file_first_frame: int
    file_frames: int
    own_offset: int
    padding: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    sample_rate: int
    channels: int
    frames: int
    encoder_delay: int
    decoder_delay: int
    segments: tuple[Segment, ...]
    marker: dict[str, float] = field(default_factory=lambda: dict(MARKER))
    marker_gap: int = MARKER_GAP_FRAMES
    codec: str = "mp3"
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("extra")
        data.update(self.extra)
        return json.dumps(data, indent=1)


def marker_pcm(sample_rate: int, channels: int) -> _Pcm:
    """The marker (channels, frames) as the manifest's formula defines it."""
    frames = int(MARKER["frames"])
    i = numpy.arange(frames, dtype=numpy.float64)
    start_hz, end_hz = float(MARKER["start_hz"]), float(MARKER["end_hz"])
    phase = 2.0 * numpy.pi * (start_hz * i + (end_hz - start_hz) * i * i / (2.0 * frames)) / sample_rate
    hann = 0.5 - 0.5 * numpy.cos(2.0 * numpy.pi * i / (frames - 1))
    one = (MARKER["amplitude"] * hann * numpy.sin(phase)).astype(numpy.float32)
    return numpy.tile(one, (channels, 1))


def _resampled(source: Path, layout: str, sample_rate: int) -> Iterator[_Pcm]:
    """The source's first audio stream as float32 arrays (channels, n), resampled, one decoded frame at a time."""
    try:
        container = av.open(str(source))
    except (av.error.FFmpegError, OSError) as error:
        raise PrepareError(f"{source}: cannot open: {error}") from error
    with container:
        if not container.streams.audio:
            raise PrepareError(f"{source}: expected an audio stream, found none")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().astype(numpy.float32, copy=False)
            for out in resampler.resample(None):
                yield out.to_ndarray().astype(numpy.float32, copy=False)
        except av.error.FFmpegError as error:
            raise PrepareError(f"{source}: cannot decode: {error}") from error


def _source_channels(source: Path) -> int:
    try:
        with av.open(str(source)) as container:
            if not container.streams.audio:
                raise PrepareError(f"{source}: expected an audio stream, found none")
            return int(container.streams.audio[0].codec_context.channels)
    except av.error.FFmpegError as error:
        raise PrepareError(f"{source}: cannot open: {error}") from error


def _lame_tag(path: Path) -> tuple[int, int]:
    """(encoder delay, padding) from the LAME tag of an MP3 file FFmpeg wrote."""
    head = path.read_bytes()[:4096]
    for name in (b"Info", b"Xing"):
        at = head.find(name)
        if at >= 0:
            lame = at + 120  # "Info" + flags + frames + bytes + 100-byte TOC + quality
            b = head[lame + 21 : lame + 24]
            if len(b) == 3:
                return (b[0] << 4) | (b[1] >> 4), ((b[1] & 0x0F) << 8) | b[2]
    raise PrepareError(f"{path}: the encoder wrote no LAME tag")


def encode_mp3(pcm: _Pcm | list[_Pcm], path: Path, sample_rate: int, bit_rate: int = DEFAULT_BIT_RATE) -> None:
    """Encode float32 PCM (channels, n), or consecutive pieces of it, as one CBR MP3 file with a LAME tag."""
    pieces = pcm if isinstance(pcm, list) else [pcm]
    layout = "mono" if pieces[0].shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate, layout=layout)
        stream.bit_rate = bit_rate
        chunk = 16 * MP3_FRAME_SIZE
        pts = 0
        for piece in pieces:
            for at in range(0, piece.shape[1], chunk):
                frame = av.AudioFrame.from_ndarray(numpy.ascontiguousarray(piece[:, at : at + chunk]), format="fltp", layout=layout)
                frame.sample_rate = sample_rate
                frame.pts = pts
                pts += frame.samples
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def prepare_track(
    source: Path,
    out_dir: Path,
    *,
    stem: str | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
    overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    bit_rate: int = DEFAULT_BIT_RATE,
) -> Manifest:
    """Decode ``source``, write its MP3 segments and ``<stem>.json`` into ``out_dir``, return the manifest.

    Memory stays bounded by one segment plus two overlaps of decoded audio,
    whatever the track's length. Raises PrepareError for a file without
    decodable audio; ValueError for nonsensical parameters.
    """
    if sample_rate < 8000 or sample_rate > 192000:
        raise ValueError(f"sample_rate: expected 8000..192000 Hz, found {sample_rate}")
    if segment_frames < MP3_FRAME_SIZE or overlap_frames < MP3_FRAME_SIZE:
        raise ValueError(f"segment_frames and overlap_frames: expected >= {MP3_FRAME_SIZE}, found {segment_frames}, {overlap_frames}")
    stem = stem or source.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    channels = 1 if _source_channels(source) == 1 else 2
    layout = "mono" if channels == 1 else "stereo"

    # Decoded audio held: track frames [base, base + held) in `chunks`.
    chunks: list[_Pcm] = []
    base = 0
    held = 0
    segments: list[Segment] = []
    encoder_delays: set[int] = set()
    head = numpy.concatenate([marker_pcm(sample_rate, channels), numpy.zeros((channels, MARKER_GAP_FRAMES), numpy.float32)], axis=1)

    def take(first: int, end: int) -> list[_Pcm]:
        """Track frames [first, end) from what is held (first >= base), as views of the decoded pieces."""
        pieces: list[_Pcm] = []
        at = base
        for chunk in chunks:
            low, high = max(first, at), min(end, at + chunk.shape[1])
            if low < high:
                pieces.append(chunk[:, low - at : high - at])
            at += chunk.shape[1]
        return pieces

    def drop_before(frame: int) -> None:
        """Forget the frames before `frame`: whole pieces, and a copy of the part of one that stays."""
        nonlocal base, held
        while chunks and base + chunks[0].shape[1] <= frame:
            base += chunks[0].shape[1]
            held -= chunks[0].shape[1]
            chunks.pop(0)
        if chunks and base < frame:
            cut = frame - base
            chunks[0] = chunks[0][:, cut:].copy()
            base += cut
            held -= cut

    def emit(first: int, end: int, total: int | None) -> None:
        file_first = max(0, first - overlap_frames)
        file_end = end + overlap_frames if total is None else min(total, end + overlap_frames)
        name = f"{stem}-{len(segments):05d}.mp3"
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        encode_mp3([head, *take(file_first, file_end)], tmp, sample_rate, bit_rate)
        os.replace(tmp, path)
        delay, padding = _lame_tag(path)
        encoder_delays.add(delay)
        own_offset = head.shape[1] + first - file_first
        segments.append(Segment(name, first, end - first, file_first, file_end - file_first, own_offset, padding, path.stat().st_size))

    next_first = 0
    for pcm in _resampled(source, layout, sample_rate):
        if pcm.shape[1] == 0:
            continue
        chunks.append(pcm)
        held += pcm.shape[1]
        # Emit every segment whose own audio and post-roll are decoded.
        while base + held >= next_first + segment_frames + overlap_frames:
            emit(next_first, next_first + segment_frames, None)
            next_first += segment_frames
            drop_before(next_first - overlap_frames)
    total = base + held
    if total == 0:
        raise PrepareError(f"{source}: expected audio, found no samples")
    while next_first < total:
        end = min(total, next_first + segment_frames)
        emit(next_first, end, total)
        next_first = end
    if len(encoder_delays) != 1:
        raise PrepareError(f"{source}: the encoder's delay varied between segments: {sorted(encoder_delays)}")
    manifest = Manifest(
        sample_rate=sample_rate,
        channels=channels,
        frames=total,
        encoder_delay=encoder_delays.pop(),
        decoder_delay=MP3_DECODER_DELAY,
        segments=tuple(segments),
    )
    tmp = out_dir / f"{stem}.json.tmp"
    tmp.write_text(manifest.to_json() + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / f"{stem}.json")
    return manifest


def load_manifest(path: Path) -> Manifest:
    """Read a manifest written by prepare_track. Raises PrepareError when it is not one.

    Segment URLs must be plain file names (beside the manifest): the server
    serves them, and a name like ``../x`` would reach outside the track folder.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
            raise PrepareError(f"{path}: expected a {MANIFEST_FORMAT} v{MANIFEST_VERSION} manifest")
        for i, segment in enumerate(data["segments"]):
            url = segment["url"]
            if not isinstance(url, str) or not SEGMENT_NAME.fullmatch(url):
                raise PrepareError(f"{path}: segments[{i}].url: expected a file name like name-00000.mp3, found {str(url)[:80]!r}")
        return Manifest(
            sample_rate=int(data["sample_rate"]),
            channels=int(data["channels"]),
            frames=int(data["frames"]),
            encoder_delay=int(data["encoder_delay"]),
            decoder_delay=int(data["decoder_delay"]),
            segments=tuple(Segment(**s) for s in data["segments"]),
            marker={k: float(v) for k, v in data["marker"].items()},
            marker_gap=int(data["marker_gap"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PrepareError(f"{path}: not a segment manifest: {error}") from error


def segment_files(tracks: Iterable[Path]) -> dict[str, Path]:
    """The segment files of every manifest among ``tracks`` (``*.json``), by file name, for serving under /tracks/."""
    files: dict[str, Path] = {}
    for path in tracks:
        if path.suffix == ".json":
            for segment in load_manifest(path).segments:
                files[segment.url] = path.parent / segment.url
    return files


def track_duration_ns(path: Path) -> int:
    """A track's length in ns: a manifest's ``frames``, or any audio file decoded and counted (bounded memory).

    Raises PrepareError when the file is neither.
    """
    if path.suffix == ".json":
        manifest = load_manifest(path)
        return manifest.frames * 1_000_000_000 // manifest.sample_rate
    frames = 0
    for pcm in _resampled(path, "mono", DEFAULT_SAMPLE_RATE):
        frames += pcm.shape[1]
    return frames * 1_000_000_000 // DEFAULT_SAMPLE_RATE


def main(argv: list[str] | None = None) -> int:
    """``python -m server.prepare SOURCE... --out DIR``: prepare each source, print its manifest's path and figures."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m server.prepare", description=main.__doc__)
    parser.add_argument("sources", nargs="+", type=Path, help="audio files (MP3, M4A/AAC, WAV, FLAC, Ogg/Opus, ...)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the segments and manifests")
    parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="Hz (default %(default)s)")
    parser.add_argument("--segment-s", type=float, default=DEFAULT_SEGMENT_FRAMES / DEFAULT_SAMPLE_RATE, help="seconds of own audio per segment (default %(default)s)")
    args = parser.parse_args(argv)
    for source in args.sources:
        try:
            manifest = prepare_track(source, args.out, sample_rate=args.sample_rate, segment_frames=round(args.segment_s * args.sample_rate))
        except (PrepareError, ValueError) as error:
            print(f"error: {error}")
            return 1
        size = sum(s.bytes for s in manifest.segments)
        print(
            f"{args.out / (source.stem + '.json')}: {manifest.duration_s:.1f} s, {len(manifest.segments)} segments, "
            f"{size / 1e6:.1f} MB ({size * 8 / manifest.duration_s / 1000:.1f} kbps)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def prepare_tracks(sources: Iterable[Path], out_dir: Path) -> dict[Path, Path]:
    """Prepare each distinct source into ``out_dir`` unless its manifest is already newer; source -> manifest path.

    Sources with the same file stem get distinct stems (``name``, ``name-2``,
    ...). For ``unisono prepare SHOW.toml``: pass the show's track files, then
    point the show at the manifests.
    """
    manifests: dict[Path, Path] = {}
    stems: set[str] = set()
    for source in sources:
        if source in manifests:
            continue
        stem, n = source.stem, 1
        while stem in stems:
            n += 1
            stem = f"{source.stem}-{n}"
        stems.add(stem)
        manifest = out_dir / f"{stem}.json"
        if not (manifest.exists() and manifest.stat().st_mtime >= source.stat().st_mtime):
            prepare_track(source, out_dir, stem=stem)
        manifests[source] = manifest
    return manifests
