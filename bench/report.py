"""Every virtual-time figure in one command: tables into bench/RESULTS.md, plots into bench/plots/.

    python -m bench.report [--devices-start 200] [--devices-hour 1000] [--seed 1]
                           [--models lan,wifi,4g,crowd] [--quick]

(a) Start runs, per network model: Unisono (``bench.virtual.simulate``, the
    real server session) and the peers (``bench.peers``: the real npm
    libraries and a naive baseline) on the same traces and phone clocks; joins
    over 0-10 s, the organizer's command at 60 s, lead 3 s. Plus the 4g model
    with a 10 ms path asymmetry, reported apart: no two-way method can see it.
(b) Hour runs, per model (``bench.hour``): |error| at minute 60 with drift
    correction, without, and with the last 20 minutes offline.
(c) Plots (``bench/plots/``): CDF of |start error| per system, one per model;
    |error| over the hour (p50-p99 bands), one per model.
(d) The tables, the targets and the run's particulars, written into
    bench/RESULTS.md between ``<!-- report:begin -->`` and ``<!-- report:end -->``
    and printed.

Needs the bench extra (matplotlib): ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.hour import HourBatch, HourConfig, Progress, abs_percentiles, parallel_map, run_hour
from bench.netmodels import MODELS, make_device, make_trace
from bench.peers import SYSTEMS, crowd_scenarios, make_world, percentiles, run_peers_on
from bench.virtual import TARGET_BOUND_US, DeviceRun, Scenario, simulate

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "RESULTS.md"
PLOTS_DIR = BENCH_DIR / "plots"
BEGIN_MARKER = "<!-- report:begin -->"
END_MARKER = "<!-- report:end -->"
UNISONO = "unisono"
START_SYSTEMS = (UNISONO, *SYSTEMS)
# The targets: start p99 per model (ms) ...
START_P99_TARGET_MS = {"lan": 1.0, "wifi": 3.0, "4g": 10.0, "crowd": 20.0}
# ... at most this share of the best peer's p99 ...
PEER_RATIO_TARGET = 0.5
# ... the bound at 5 ms within 2 s of joining on 4g, p50 and p99 ...
TIME_TO_TARGET_MODEL = "4g"
TIME_TO_TARGET_S = 2.0
# ... and at minute 60: p99 <= 5 ms with correction, <= 10 ms with the outage.
HOUR_P99_TARGET_MS = 5.0
OUTAGE_P99_TARGET_MS = 10.0
# The asymmetry row: 10 ms more uplink than downlink, on 4g.
ASYM_MODEL = "4g"
ASYM_MS = 10.0
# Start scenario (seconds since the trace began).
JOIN_MAX_S = 10.0
COMMAND_S = 60.0
LEAD_S = 3.0
START_END_S = 70.0
QUICK_DEVICES = 20
QUICK_HOUR_S = 600.0
PLOT_DPI = 80


@dataclass
class StartRun:
    """One start run: the start error (ms, NaN = never started) of every device, per system."""

    label: str  # the model, or e.g. "4g asym 10 ms"
    model: str
    asym_ms: float
    devices: int
    errors_ms: dict[str, list[float]]
    bounds_ms: list[float] = field(default_factory=list)  # Unisono's bound at its start
    time_to_target_s: list[float] = field(default_factory=list)  # Unisono: join -> bound <= 5 ms (inf: never)


def finite_percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (numpy's linear) of values that may hold inf (never); inf if it lands on one."""
    array = np.asarray(values, dtype=float)
    if len(array) == 0:
        return math.nan
    big = 1e300
    value = float(np.percentile(np.where(np.isinf(array), big, array), q))
    return math.inf if value >= big / 2 else value


def coverage(errors_ms: Sequence[float], bounds_ms: Sequence[float]) -> float:
    """Share of the devices that started whose |error| was within the bound they were given."""
    pairs = [(e, b) for e, b in zip(errors_ms, bounds_ms) if math.isfinite(e) and math.isfinite(b)]
    if not pairs:
        return math.nan
    return sum(1 for e, b in pairs if abs(e) <= b) / len(pairs)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _s(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "never" if math.isinf(value) else f"{value:.3f}"


def start_rows(run: StartRun) -> list[dict[str, str]]:
    """One table row per system: the cells of format_start_table."""
    rows = []
    for system in START_SYSTEMS:
        p = percentiles(run.errors_ms[system])
        row = {
            "network": run.label,
            "system": system,
            "started": f"{p['started']}/{run.devices}",
            "p50": _ms(p["p50"]),
            "p95": _ms(p["p95"]),
            "p99": _ms(p["p99"]),
            "max": _ms(p["max"]),
            "to_target": "n/a",
            "coverage": "n/a",
        }
        if system == UNISONO:
            row["to_target"] = f"{_s(finite_percentile(run.time_to_target_s, 50))} / {_s(finite_percentile(run.time_to_target_s, 99))}"
            row["coverage"] = f"{100 * coverage(run.errors_ms[system], run.bounds_ms):.1f} %"
        rows.append(row)
    return rows


def format_start_table(runs: Sequence[StartRun]) -> str:
    """The start table: |start error| percentiles, time to a 5 ms bound and coverage, per model and system."""
    lines = [
        "| network | system | started | \\|error\\| p50 | p95 | p99 | max (ms) | bound <= 5 ms after join p50 / p99 (s) | bound coverage |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        for r in start_rows(run):
            lines.append(
                f"| {r['network']} | {r['system']} | {r['started']} | {r['p50']} | {r['p95']} | {r['p99']} | {r['max']} "
                f"| {r['to_target']} | {r['coverage']} |"
            )
    return "\n".join(lines)


def hour_row(batch: HourBatch) -> dict[str, tuple[float, float, float]]:
    """p50/p99/max of |error| at the last record time (minute 60 of a full run), per variant, and at the start."""
    return {
        "start": abs_percentiles(batch.audio_start_error_ms),
        "corrected": abs_percentiles(batch.corrected_ms[:, -1]),
        "uncorrected": abs_percentiles(batch.uncorrected_ms[:, -1]),
        "outage": abs_percentiles(batch.outage_ms[:, -1]),
    }


def format_hour_table(batches: Sequence[HourBatch]) -> str:
    """The hour table: |error| p50 / p99 / max (ms) at the end of the show, per model and variant."""
    lines = [
        "| network | devices | at the start (audio) | end, with correction | end, without correction | end, with the outage (corrected) | re-aligns (outage) | rate changes / device / min p50 |",
        "|---|---:|---|---|---|---|---:|---:|",
    ]
    for b in batches:
        row = hour_row(b)
        cells = [" / ".join(_ms(v) for v in row[k]) for k in ("start", "corrected", "uncorrected", "outage")]
        minutes = b.record_times_s[-1] / 60 if len(b.record_times_s) and b.record_times_s[-1] > 0 else math.nan
        changes = float(np.median(b.rate_changes)) / minutes if len(b.rate_changes) else math.nan
        lines.append(
            f"| {b.model} | {len(b.start_error_ms)} | {' | '.join(cells)} | {int(b.realigns.sum())} ({int(b.outage_realigns.sum())}) "
            f"| {_ms(changes)} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: what, whether it was reached (None: not measured), the figure."""

    what: str
    reached: bool | None
    figure: str


def _p99(errors: Sequence[float]) -> float:
    return float(percentiles(errors)["p99"])


def check_targets(runs: Sequence[StartRun], batches: Sequence[HourBatch]) -> list[Target]:
    """The issue's targets against the figures measured (models not run are left out)."""
    targets: list[Target] = []
    by_label = {r.label: r for r in runs}
    for model, limit in START_P99_TARGET_MS.items():
        if model in by_label:
            p99 = _p99(by_label[model].errors_ms[UNISONO])
            targets.append(Target(f"start p99 <= {limit:g} ms on {model}", p99 <= limit, f"{p99:.2f} ms"))
    for model in START_P99_TARGET_MS:
        if model in by_label:
            run = by_label[model]
            p99 = _p99(run.errors_ms[UNISONO])
            peer, peer_p99 = min(((s, _p99(run.errors_ms[s])) for s in SYSTEMS), key=lambda x: x[1])
            ratio = p99 / peer_p99 if peer_p99 > 0 else math.inf
            targets.append(
                Target(
                    f"start p99 <= half the best peer's on {model}",
                    ratio <= PEER_RATIO_TARGET,
                    f"{p99:.2f} ms vs {peer} {peer_p99:.2f} ms ({ratio:.2f}x)",
                )
            )
    if TIME_TO_TARGET_MODEL in by_label:
        ttt = by_label[TIME_TO_TARGET_MODEL].time_to_target_s
        p50, p99 = finite_percentile(ttt, 50), finite_percentile(ttt, 99)
        targets.append(
            Target(
                f"bound <= {TARGET_BOUND_US / 1000:g} ms within {TIME_TO_TARGET_S:g} s on {TIME_TO_TARGET_MODEL}, p50 and p99",
                p50 <= TIME_TO_TARGET_S and p99 <= TIME_TO_TARGET_S,
                f"p50 {_s(p50)} s, p99 {_s(p99)} s",
            )
        )
    for b in batches:
        minute = b.record_times_s[-1] / 60
        row = hour_row(b)
        p99 = row["corrected"][1]
        targets.append(Target(f"minute-{minute:g} p99 <= {HOUR_P99_TARGET_MS:g} ms on {b.model}", p99 <= HOUR_P99_TARGET_MS, f"{p99:.2f} ms"))
        p99 = row["outage"][1]
        targets.append(
            Target(f"minute-{minute:g} p99 <= {OUTAGE_P99_TARGET_MS:g} ms with the outage on {b.model}", p99 <= OUTAGE_P99_TARGET_MS, f"{p99:.2f} ms")
        )
    return targets


def format_targets(targets: Sequence[Target]) -> str:
    words = {True: "reached", False: "not reached", None: "not measured"}
    return "\n".join(f"- {t.what}: **{words[t.reached]}** ({t.figure})" for t in targets)


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with what lies between the report markers replaced by ``block`` (markers appended when absent)."""
    section = f"{BEGIN_MARKER}\n{block.strip()}\n{END_MARKER}"
    pattern = re.compile(re.escape(BEGIN_MARKER) + ".*?" + re.escape(END_MARKER), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + "\n\n" + section + "\n"


# -- runs ---------------------------------------------------------------------


def _unisono_start(args: tuple[str, int, int, Scenario, float]) -> tuple[int, DeviceRun]:
    model, seed, device, scenario, asym_ms = args
    # bench.peers.make_world's trace and phone, made again in the worker.
    trace = make_trace(model, seed, device, scenario.end_s, asym_ms=asym_ms)
    return device, simulate(trace, make_device(seed, device), scenario)


def run_start(model: str, seed: int, devices: int, *, asym_ms: float = 0.0, workers: int = 2, progress: bool = True) -> StartRun:
    """Unisono and the peers on the same ``devices`` traces and phones of ``model``."""
    label = model if asym_ms == 0 else f"{model} asym {asym_ms:g} ms"
    scenarios = crowd_scenarios(seed, devices, join_max_s=JOIN_MAX_S, command_s=COMMAND_S, lead_s=LEAD_S, end_s=START_END_S)
    tasks = [(model, seed, i, scenarios[i], asym_ms) for i in range(devices)]
    bar = Progress(f"start {label}", devices + 1) if progress else None
    runs = dict(parallel_map(_unisono_start, tasks, workers, bar))
    traces, profiles = make_world(model, seed, devices, START_END_S, asym_ms=asym_ms)
    peers = run_peers_on(model, seed, traces, profiles, scenarios)
    if bar:
        bar.advance()
    ordered = [runs[i] for i in range(devices)]
    errors = {UNISONO: [r.start_error_ms for r in ordered]}
    errors.update({name: list(peers[name]["start_error_ms"]) for name in SYSTEMS})
    return StartRun(
        label,
        model,
        asym_ms,
        devices,
        errors,
        [r.start_bound_ms for r in ordered],
        [r.time_to_target_s for r in ordered],
    )


# -- plots ----------------------------------------------------------------------


def _axes() -> tuple[Any, Any]:
    """A figure and its axes, drawn off-screen (Agg): matplotlib is imported only when plotting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.6))


def _save(fig: Any, ax: Any, title: str, legend: str, fontsize: int, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc=legend, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_start_cdf(run: StartRun, path: Path) -> None:
    """CDF of |start error| per system, log x."""
    fig, ax = _axes()
    for system in START_SYSTEMS:
        values = np.sort(np.abs([e for e in run.errors_ms[system] if math.isfinite(e)]))
        if len(values) == 0:
            continue
        values = np.maximum(values, 1e-3)  # log axis: below 1 us shows at 1 us
        ax.step(values, np.arange(1, len(values) + 1) / run.devices, where="post", label=system)
    ax.set_xscale("log")
    ax.set_xlabel("|start error| (ms)")
    ax.set_ylabel("share of devices")
    ax.set_ylim(0, 1.01)
    _save(fig, ax, f"Start error, {run.label}, {run.devices} devices", "lower right", 8, path)


def plot_hour(batch: HourBatch, path: Path, outage_last_s: float) -> None:
    """|error| over the show: p50 line and p50-p99 band per variant, log y."""
    minutes = batch.record_times_s / 60
    fig, ax = _axes()
    for name, errors, colour in (
        ("without correction", batch.uncorrected_ms, "tab:red"),
        ("with correction", batch.corrected_ms, "tab:blue"),
        ("with correction, outage", batch.outage_ms, "tab:orange"),
    ):
        absolute = np.maximum(np.abs(errors), 1e-3)
        p50 = np.percentile(absolute, 50, axis=0)
        p99 = np.percentile(absolute, 99, axis=0)
        ax.fill_between(minutes, p50, p99, color=colour, alpha=0.2, linewidth=0)
        ax.plot(minutes, p50, color=colour, label=f"{name} (p50; band to p99)")
    cut = (batch.record_times_s[-1] - outage_last_s) / 60
    if cut > 0:
        ax.axvline(cut, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("minutes after the start")
    ax.set_ylabel("|played - due| (ms)")
    _save(fig, ax, f"Playback error over the show, {batch.model}, {len(batch.start_error_ms)} devices", "upper left", 7, path)


# -- the report -------------------------------------------------------------------


def machine() -> str:
    return (
        f"{os.cpu_count()} cores (nproc), shared and noisy; {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def source_state() -> str:
    """The commit the figures come from, and whether the code they run had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""  # not stripped: porcelain lines start with a space

    commit = git("rev-parse", "--short", "HEAD").strip()
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "clock", "protocol", "server", "bench/virtual.py", "bench/netmodels.py", "bench/peers.py", "bench/hour.py")
    changed = sorted({line[3:] for line in dirty.splitlines() if line[3:].endswith(".py")})
    return f"commit {commit}" + (f", with uncommitted changes to {', '.join(changed)}" if changed else "")


def render_block(
    command: str,
    date: str,
    seed: int,
    runtime_s: float,
    runs: Sequence[StartRun],
    batches: Sequence[HourBatch],
    config: HourConfig,
    plots: Sequence[str],
    source: str = "",
) -> str:
    """The generated section of RESULTS.md."""
    minute = config.hour_s / 60
    lines = [
        "## Virtual time: start and hour, `python -m bench.report`",
        "",
        f"Command: `{command}`. Date: {date}. Machine: {machine()}. Seed {seed}. Wall time {runtime_s:.0f} s."
        + (f" Code: {source}." if source else ""),
        "",
        "### Start",
        "",
        f"Devices join uniformly over 0-{JOIN_MAX_S:g} s; the organizer's command reaches the server at "
        f"{COMMAND_S:g} s, lead {LEAD_S:g} s. Unisono is the real server session (`bench.virtual`); the peers are "
        "the real npm packages (`bench.peers`) and a one-ping baseline, on the same traces and phone clocks. "
        "Start error = true time of the device's start - T. The bound columns are Unisono's (the peers give none). "
        f"The `{ASYM_MODEL} asym {ASYM_MS:g} ms` row adds {ASYM_MS:g} ms to every uplink delay: a two-way exchange "
        f"cannot see it, so every method should be off by about half of it ({ASYM_MS / 2:g} ms).",
        "",
        format_start_table(runs),
        "",
        "### Over the show",
        "",
        f"|error| (ms) p50 / p99 / max of the *played* position against the schedule at minute {minute:g} after T "
        "(`bench.hour`: the real session's estimates, the page's drift controller, audio clocks +-100 ppm against "
        "system clocks +-100 ppm, output timestamps on 128-frame quanta, performance.now() at the device's "
        f"resolution). Outage: no network in the last {round(config.outage_s / 60, 1):g} minutes. "
        "At the start (audio): the played position's error once the track starts, output-timestamp noise included.",
        "",
        format_hour_table(batches),
        "",
        "### Targets",
        "",
        format_targets(check_targets(runs, batches)),
        "",
        "### Plots",
        "",
        *[f"![{Path(p).stem}]({p})" for p in plots],
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices-start", type=int, default=200, help="devices per start run")
    parser.add_argument("--devices-hour", type=int, default=1000, help="devices per hour run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated network models")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_DEVICES} devices, {QUICK_HOUR_S:g} s show; writes only where told")
    parser.add_argument("--hour-s", type=float, default=None, help="show length after T (default 3600, --quick 600)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, default=None, help=f"file to write the section into (default {RESULTS_PATH.relative_to(BENCH_DIR.parent)}; none with --quick)")
    parser.add_argument("--plots", type=Path, default=None, help=f"directory for the PNGs (default {PLOTS_DIR.relative_to(BENCH_DIR.parent)}; none with --quick)")
    parser.add_argument("--no-asym", action="store_true", help="skip the asymmetry row")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: expected names from {', '.join(MODELS)}, found {m!r}")
    if args.quick:
        args.devices_start = min(args.devices_start, QUICK_DEVICES)
        args.devices_hour = min(args.devices_hour, QUICK_DEVICES)
    hour_s = args.hour_s if args.hour_s is not None else (QUICK_HOUR_S if args.quick else 3600.0)
    results = args.results if args.results is not None or args.quick else RESULTS_PATH
    plots_dir = args.plots if args.plots is not None or args.quick else PLOTS_DIR
    config = HourConfig(hour_s=hour_s)
    command = "python -m bench.report" + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(sys.argv[1:] if argv is None else argv))

    source = source_state()  # before the run: the code it imports
    began = time.monotonic()
    runs = [run_start(m, args.seed, args.devices_start, workers=args.workers) for m in models]
    if ASYM_MODEL in models and not args.no_asym:
        runs.append(run_start(ASYM_MODEL, args.seed, args.devices_start, asym_ms=ASYM_MS, workers=args.workers))
    batches = [run_hour(m, args.seed, args.devices_hour, config, workers=args.workers) for m in models]
    runtime_s = time.monotonic() - began

    plots: list[str] = []
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for run in runs:
            path = plots_dir / f"start-cdf-{run.label.replace(' ', '-')}.png"
            plot_start_cdf(run, path)
            plots.append(path.name)
        for batch in batches:
            path = plots_dir / f"hour-{batch.model}.png"
            plot_hour(batch, path, config.outage_s)
            plots.append(path.name)
        if results is not None:
            plots = [os.path.relpath((plots_dir / p).resolve(), results.resolve().parent) for p in plots]
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = render_block(command, date, args.seed, runtime_s, runs, batches, config, plots, source)
    print(block)
    if results is not None:
        text = results.read_text() if results.exists() else "# Benchmark results\n"
        results.write_text(replace_between_markers(text, block))
        print(f"wrote {results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
