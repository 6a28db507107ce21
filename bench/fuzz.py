"""A long fuzzing campaign over every decoder, outside the normal test run.

    python -m bench.fuzz --inputs 1000000 [--seed S] [--target protocol,sntp,showfile,api]

Runs the properties of ``tests/fuzz/targets.py`` (the same ones the hypothesis
tests check, imported, not copied) on seeded inputs: mostly mutations of each
target's valid corpus (bit flips, interesting bytes, inserts, deletes,
splices, stacked, and structural ones that keep a msgpack map, TOML lines or
a JSON object whole), some plain random bytes. An input that produced an outcome
kind not seen before joins the corpus, so mutations reach past the first
check. ``--inputs`` is the total, split evenly over the targets.

Prints a table: target, inputs, outcome kinds seen with counts, crashes,
inputs/s, elapsed, slowest input. A crash is any exception the decoder does
not document, a broken property, or an input that runs over ``--hang-s``;
each one's input and traceback go to ``--crash-dir``, and the exit status is
1. A target may also be named as ``module:ATTRIBUTE`` (a ``Target``), which
is how the smoke test plants a broken decoder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import random
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from tests.fuzz.targets import TARGETS, Target, mutate

# Inputs larger than every decoder's cap are cut here: the caps themselves
# (1 KiB, 4 KiB, 4 KiB bodies) are what is fuzzed, not the memory allocator.
MAX_INPUT_BYTES = 8192
# Share of inputs that are plain random bytes rather than mutations.
RANDOM_SHARE = 0.1
# Corpus entries kept per target (seeds plus inputs that found a new outcome).
MAX_CORPUS = 200
# Crash files written per target: the first few tell the story.
MAX_CRASH_FILES = 5


class Hang(Exception):
    """An input ran past the time limit."""


@dataclass
class Report:
    """What one target's campaign saw."""

    name: str
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    slowest_s: float = 0.0
    crash_files: list[Path] = field(default_factory=list)


def resolve_targets(spec: str) -> list[Target]:
    """Targets named by ``spec``: comma-separated names or prefixes (``protocol``), or ``module:ATTR``."""
    chosen: list[Target] = []
    for word in filter(None, (w.strip() for w in spec.split(","))):
        if ":" in word:
            module, _, attr = word.partition(":")
            target = getattr(importlib.import_module(module), attr)
            if not isinstance(target, Target):
                raise SystemExit(f"{word}: not a Target")
            chosen.append(target)
            continue
        matches = [t for name, t in TARGETS.items() if name == word or name.startswith(word + ".")]
        if not matches:
            raise SystemExit(f"unknown target {word!r}: expected one of {', '.join(TARGETS)} (or a prefix, or module:ATTR)")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("the input ran past the time limit")


def next_input(rng: random.Random, corpus: list[bytes], target: Target) -> bytes:
    """Random bytes now and then, else a corpus entry mutated once or several times, half of it structurally."""
    if rng.random() < RANDOM_SHARE:
        return rng.randbytes(rng.choice((rng.randrange(64), rng.randrange(MAX_INPUT_BYTES))))
    data = rng.choice(corpus)
    frozen = tuple(corpus)
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        if target.structured is not None and rng.random() < 0.5:
            data = target.structured(data, rng)
        else:
            data = mutate(data, rng, frozen)
    return data[:MAX_INPUT_BYTES]


def campaign(target: Target, inputs: int, seed: int, crash_dir: Path, hang_s: float) -> Report:
    """Run ``inputs`` inputs through ``target``; crashes are counted and written, the run goes on."""
    report = Report(target.name)
    rng = random.Random(f"{seed}:{target.name}")
    corpus = list(target.seeds)
    signal.signal(signal.SIGALRM, _on_alarm)
    started = time.perf_counter()
    for _ in range(inputs):
        data = next_input(rng, corpus, target)
        before = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, hang_s)
        try:
            kind = target.run(data)
        except Exception as exc:  # noqa: BLE001 - anything but the documented outcome is the finding
            signal.setitimer(signal.ITIMER_REAL, 0)
            _record_crash(report, data, exc, crash_dir)
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if kind not in report.outcomes and len(corpus) < MAX_CORPUS:
                corpus.append(data)
            report.outcomes[kind] += 1
        report.slowest_s = max(report.slowest_s, time.perf_counter() - before)
        report.inputs += 1
    report.elapsed_s = time.perf_counter() - started
    return report


def _record_crash(report: Report, data: bytes, exc: Exception, crash_dir: Path) -> None:
    name = f"{type(exc).__name__}: {str(exc)[:80]}".splitlines()[0]
    report.crashes[name] += 1
    if len(report.crash_files) >= MAX_CRASH_FILES:
        return
    crash_dir.mkdir(parents=True, exist_ok=True)
    stem = crash_dir / f"{report.name}-{hashlib.sha1(data).hexdigest()[:12]}"
    stem.with_suffix(".bin").write_bytes(data)
    stem.with_suffix(".txt").write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    report.crash_files.append(stem.with_suffix(".bin"))


def table(reports: list[Report]) -> str:
    """The results as a Markdown table, one row per target and a total."""
    lines = [
        "| target | inputs | outcome kinds (count) | crashes | inputs/s | elapsed (s) | slowest input (ms) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in reports:
        kinds = "; ".join(f"{kind} ({count:,})" for kind, count in r.outcomes.most_common())
        crashes = sum(r.crashes.values())
        rate = r.inputs / r.elapsed_s if r.elapsed_s > 0 else 0.0
        lines.append(f"| {r.name} | {r.inputs:,} | {kinds} | {crashes} | {rate:,.0f} | {r.elapsed_s:.1f} | {r.slowest_s * 1000:.1f} |")
    total_inputs = sum(r.inputs for r in reports)
    total_crashes = sum(sum(r.crashes.values()) for r in reports)
    total_s = sum(r.elapsed_s for r in reports)
    lines.append(f"| **total** | {total_inputs:,} | | {total_crashes} | {total_inputs / total_s if total_s else 0:,.0f} | {total_s:.1f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs in total, split evenly over the targets")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", default=",".join(TARGETS), help="names or prefixes, comma-separated (default: all)")
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--hang-s", type=float, default=5.0, help="an input running longer than this is a crash (a hang)")
    args = parser.parse_args(argv)
    targets = resolve_targets(args.target)
    share, extra = divmod(args.inputs, len(targets))
    reports = []
    for i, target in enumerate(targets):
        report = campaign(target, share + (i < extra), args.seed, args.crash_dir, args.hang_s)
        reports.append(report)
        for name, count in report.crashes.items():
            print(f"CRASH {target.name}: {name} ({count}x)", file=sys.stderr)
        for path in report.crash_files:
            print(f"  input written to {path} (traceback beside it)", file=sys.stderr)
        print(f"{target.name}: {report.inputs:,} inputs in {report.elapsed_s:.1f} s", file=sys.stderr, flush=True)
    print(f"python -m bench.fuzz --inputs {args.inputs} --seed {args.seed} --target {args.target}\n")
    print(table(reports))
    return 1 if any(r.crashes for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
