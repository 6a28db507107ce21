"""Soak: a long run of one real server with a crowd pinging and reporting, watched for slow decay.

    python -m bench.soak --devices 1000 --minutes 30

One ``unisono serve`` process and ``bench.scale_client`` processes (phones that
answer every ping, send ``ready`` every 30 s as the page does, and know their
true offset), reusing ``bench.scale``'s process management. After the warm-up
(``--warmup-s``, 5 min by default) the organizer starts the show; it plays
until the end (the track is longer than the run). Meanwhile:

- the server's RSS every ``--sample-s`` (10 s), from /proc;
- every ``--bucket-s`` (a minute), every device's latest estimate against the
  truth: p50 / p99 of |offset estimate - true offset| over the devices;
- errors: devices closed by the server (with its reason) or failed, ``error``
  messages the devices received, ERROR / CRITICAL / Traceback lines in the
  server's log.

It prints a table per bucket and a verdict (``verdict``): RSS growth from the
end of the warm-up to the end under 5 %, no error, the last bucket's sync p99
within 1.2x the first's (or within 0.1 ms of it). It writes a plot of RSS and
sync p99 over time (``--plot``) and the figures as JSON (``--json``). Exit 0
when the verdict passes, 1 when it fails, 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy

from bench.scale import Run, RunAborted, RunConfig, auto_clients, machine, proc_sample

ROOT = Path(__file__).resolve().parent.parent
# The criteria (issue 7): memory flat, no errors, sync p99 unchanged.
MAX_RSS_GROWTH = 0.05
MAX_P99_RATIO = 1.2
P99_SLACK_US = 100.0
# The show's track outlasts the run by this much: it plays to the end of the soak.
TRACK_MARGIN_S = 120.0
# A log line that is an error (text format: "<time> LEVEL name: message").
ERROR_MARKERS = (" ERROR ", " CRITICAL ", "Traceback (most recent call last)")


@dataclass
class Bucket:
    """One period's figures (a minute by default); times from the start of the run, seconds."""

    index: int
    end_s: float
    devices: int  # devices holding an estimate
    sync_p50_us: float
    sync_p99_us: float
    rss_mb: float  # mean of the RSS samples in the period
    errors: int  # cumulative at the period's end


@dataclass
class SoakResult:
    devices: int
    seconds: float
    warmup_s: float
    bucket_s: float
    machine: str
    date: str
    rss: list[tuple[float, float]] = field(default_factory=list)  # (s since the run began, MB)
    buckets: list[Bucket] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    start_at_s: float | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    aborted: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    return float(numpy.percentile(values, q)) if values else math.nan


def verdict(
    rss: Sequence[tuple[float, float]], warmup_s: float, bucket_s: float, errors: int, first_p99_us: float, last_p99_us: float
) -> dict[str, Any]:
    """Pass or fail, criterion by criterion, from the run's series.

    Memory: the mean RSS of the last ``bucket_s`` against the mean of the first
    ``bucket_s`` after the warm-up; growth must stay under MAX_RSS_GROWTH.
    Errors: none. Sync: the last bucket's p99 at most MAX_P99_RATIO times the
    first's, or at most P99_SLACK_US above it. A criterion without data fails.
    """
    end_s = max((t for t, _ in rss), default=0.0)
    base = [mb for t, mb in rss if warmup_s <= t < warmup_s + bucket_s]
    last = [mb for t, mb in rss if t > end_s - bucket_s and t >= warmup_s + bucket_s]
    growth = (sum(last) / len(last)) / (sum(base) / len(base)) - 1 if base and last else math.nan
    sync_ok = math.isfinite(first_p99_us) and math.isfinite(last_p99_us) and (
        last_p99_us <= MAX_P99_RATIO * first_p99_us or last_p99_us <= first_p99_us + P99_SLACK_US
    )
    checks = {
        "memory": math.isfinite(growth) and growth < MAX_RSS_GROWTH,
        "errors": errors == 0,
        "sync": sync_ok,
    }
    return {
        "pass": all(checks.values()),
        "checks": checks,
        "rss_growth": growth,
        "errors": errors,
        "first_p99_us": first_p99_us,
        "last_p99_us": last_p99_us,
    }


def server_log_errors(path: Path) -> list[str]:
    """The server log's error lines (ERROR, CRITICAL, tracebacks)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in lines if any(marker in line for marker in ERROR_MARKERS)]


def count_errors(rows: Sequence[dict[str, Any]], log_errors: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Errors by kind, and the first few as text: failed or closed devices, error messages, server log errors."""
    failures = [row["failure"] for row in rows if row.get("failure")]
    messages = sum(int(row["counts"].get("error", 0)) for row in rows)
    counts = {"device_failures": len(failures), "error_messages": messages, "server_log_errors": len(log_errors)}
    return counts, (failures[:3] + list(log_errors[:3]))


def sync_errors_us(rows: Sequence[dict[str, Any]]) -> list[float]:
    """|latest estimate - true offset| of every device that holds an estimate (µs)."""
    return [abs(float(row["last_error_us"])) for row in rows if row.get("last_error_us") is not None]


def write_show(directory: Path, track_s: float) -> Path:
    """A two-group show sharing one silent track of ``track_s`` (prepared once); returns the TOML's path."""
    with wave.open(str(directory / "soak.wav"), "wb") as wav:
        wav.setparams((1, 2, 8000, 0, "NONE", "not compressed"))
        silence = bytes(2 * 8000 * 60)
        for _ in range(math.ceil(track_s / 60)):
            wav.writeframes(silence)
    text = 'title = "bench.soak"\n'
    for group in ("red", "blue"):
        text += f'\n[[groups]]\nname = "{group}"\ntrack = "soak.wav"\n'
    path = directory / "show.toml"
    path.write_text(text, encoding="utf-8")
    return path


class SoakRun(Run):
    """``bench.scale``'s processes, run for a long time with periodic samples instead of its four phases."""

    def __init__(self, args: argparse.Namespace, log: Any) -> None:
        devices = args.devices
        join_window_s = min(30.0, max(2.0, devices / 100))
        config = RunConfig(devices, auto_clients(devices), steady_s=0.0, lead_s=args.lead_s, join_window_s=join_window_s, compression="none")
        super().__init__(config, log)
        self.args = args
        self.soak = SoakResult(devices, args.minutes * 60, args.warmup_s, args.bucket_s, machine(), "")

    async def execute_soak(self, tmp: Path) -> SoakResult:
        hard_timeout_s = self.soak.seconds + 300.0
        try:
            await asyncio.wait_for(self._soak(tmp), hard_timeout_s)
        except asyncio.TimeoutError:
            self.soak.aborted = f"hard timeout of {hard_timeout_s:.0f} s"
        except RunAborted as exc:
            self.soak.aborted = str(exc)
        finally:
            await self._kill_all()
        return self.soak

    async def _soak(self, tmp: Path) -> None:
        import aiohttp

        args, soak = self.args, self.soak
        show = write_show(tmp, soak.seconds + TRACK_MARGIN_S)
        await self._start_nodes(show, tmp, None)
        pid = self.nodes[0].proc.pid
        log_path = tmp / "server.log"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            self.http = http
            await self._start_clients()
            began = time.monotonic()
            soak.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            await self._tell_clients({"cmd": "join", "t0_ns": self.now_ns() + 500_000_000})
            self.log(f"  {soak.devices} devices join over {self.config.join_window_s:g} s; soak {soak.seconds:g} s")
            next_sample, next_bucket, started = 0.0, soak.bucket_s, False
            while True:
                elapsed = time.monotonic() - began
                if elapsed >= next_sample:
                    soak.rss.append((round(elapsed, 1), proc_sample(pid).rss_bytes / 2**20))
                    next_sample += args.sample_s
                if not started and elapsed >= soak.warmup_s:
                    started = True
                    if await self._start_show() is None:
                        raise RunAborted(f"the start was refused: {self.result.start_refusal}")
                    soak.start_at_s = round(elapsed, 1)
                if elapsed >= next_bucket:
                    await self._bucket(len(soak.buckets), elapsed, log_path)
                    next_bucket += soak.bucket_s
                    if elapsed >= soak.seconds - 1e-6:
                        break
                await asyncio.sleep(max(0.0, min(next_sample, next_bucket) - (time.monotonic() - began)))
        first = next((b for b in soak.buckets if b.devices), None)
        last = soak.buckets[-1] if soak.buckets else None
        soak.verdict = verdict(
            soak.rss, soak.warmup_s, soak.bucket_s, sum(soak.errors.values()),
            first.sync_p99_us if first else math.nan, last.sync_p99_us if last else math.nan,
        )  # fmt: skip

    async def _bucket(self, index: int, elapsed: float, log_path: Path) -> None:
        soak = self.soak
        self.reports.clear()
        rows = await self._collect_reports()
        errors = sync_errors_us(rows)
        soak.errors, soak.first_errors = count_errors(rows, server_log_errors(log_path))
        in_bucket = [mb for t, mb in soak.rss if t > elapsed - soak.bucket_s]
        bucket = Bucket(
            index, round(elapsed, 1), len(errors), percentile(errors, 50), percentile(errors, 99),
            sum(in_bucket) / len(in_bucket) if in_bucket else math.nan, sum(soak.errors.values()),
        )  # fmt: skip
        soak.buckets.append(bucket)
        self.log(
            f"  {bucket.end_s:7.0f} s: {bucket.devices} devices, sync p50 / p99 {bucket.sync_p50_us:.0f} / "
            f"{bucket.sync_p99_us:.0f} us, RSS {bucket.rss_mb:.1f} MB, errors {bucket.errors}"
        )


def format_table(result: SoakResult) -> str:
    """The per-bucket table (Markdown) and the verdict line."""
    lines = [
        f"| period end (s) | phase | devices with estimate | sync p50 (µs) | sync p99 (µs) | RSS (MB) | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for b in result.buckets:
        phase = "warm-up" if b.end_s <= result.warmup_s else "show"
        lines.append(
            f"| {b.end_s:.0f} | {phase} | {b.devices} | {b.sync_p50_us:.1f} | {b.sync_p99_us:.1f} | {b.rss_mb:.1f} | {b.errors} |"
        )
    lines.append("")
    lines.append(format_verdict(result.verdict))
    return "\n".join(lines)


def format_verdict(v: dict[str, Any]) -> str:
    if not v:
        return "verdict: none (the run did not finish)"
    checks = ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in v["checks"].items())
    return (
        f"verdict: {'PASS' if v['pass'] else 'FAIL'} ({checks}): RSS growth after warm-up {100 * v['rss_growth']:+.2f} % "
        f"(limit {100 * MAX_RSS_GROWTH:.0f} %), errors {v['errors']}, sync p99 first / last "
        f"{v['first_p99_us']:.1f} / {v['last_p99_us']:.1f} µs (limit {MAX_P99_RATIO}x or +{P99_SLACK_US:.0f} µs)"
    )


def plot(result: SoakResult, path: Path) -> None:
    """RSS (MB) and sync p99 (µs) over the run, one figure, two axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, rss_axis = plt.subplots(figsize=(8, 4))
    rss_axis.plot([t / 60 for t, _ in result.rss], [mb for _, mb in result.rss], color="tab:blue", label="server RSS")
    rss_axis.set_xlabel("minutes")
    rss_axis.set_ylabel("server RSS (MB)", color="tab:blue")
    sync_axis = rss_axis.twinx()
    sync_axis.plot([b.end_s / 60 for b in result.buckets], [b.sync_p99_us for b in result.buckets], "o-", color="tab:red")
    sync_axis.set_ylabel("sync p99 |estimate - truth| (µs)", color="tab:red")
    rss_axis.axvline(result.warmup_s / 60, color="grey", linestyle=":")
    rss_axis.set_title(f"bench.soak: {result.devices} devices, {result.seconds / 60:g} min")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run (default: 30)")
    parser.add_argument("--warmup-s", type=float, default=300.0, help="warm-up before the start (default: 300)")
    parser.add_argument("--bucket-s", type=float, default=60.0, help="period of the sync table (default: 60)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period (default: 10)")
    parser.add_argument("--lead-s", type=float, default=10.0, help="the start's countdown (default: 10)")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "plots" / "soak.png")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "plots" / "soak.json")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="unisono-soak-") as tmp:
        result = asyncio.run(SoakRun(args, log).execute_soak(Path(tmp)))
    print(format_table(result))
    if result.first_errors:
        print("first errors: " + " | ".join(result.first_errors))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(result), indent=1) + "\n", encoding="utf-8")
    if result.aborted:
        print(f"aborted: {result.aborted}")
        return 2
    plot(result, args.plot)
    return 0 if result.verdict.get("pass") else 1


if __name__ == "__main__":
    raise SystemExit(main())
