"""Peer browser clock-sync libraries on exactly Unisono's traces and clocks.

The real npm packages (``@ircam/sync``, ``timesync``; see bench/peers/) run
unmodified in Node under virtual time (bench/peers/run.mjs): their timers and
clocks are faked, each device's local clock is its ``DeviceProfile`` and the
network replays the same ``bench.netmodels`` delay fields, TCP-ordered, that
``bench.virtual.simulate`` gives Unisono. A naive baseline (one Cristian ping
at join) is run alongside.

Start error, as in bench/virtual.py: the true time at which a device starts a
show due at server time T, minus T, in ms (server time is true time).

    python -m bench.peers --model 4g --devices 50
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.netmodels import CELL_S, MODELS, DeviceProfile, Trace, make_device, make_trace
from bench.virtual import Scenario, simulate

SYSTEMS = ("ircam-sync", "timesync", "naive")
PEERS_DIR = Path(__file__).with_name("peers")
RUNNER = PEERS_DIR / "run.mjs"


class NodeDepsError(RuntimeError):
    """Node.js or npm is missing, or installing the peers' packages failed."""


def ensure_node_deps() -> None:
    """Install bench/peers' locked npm packages (``npm ci``) unless node_modules exists."""
    if shutil.which("node") is None:
        raise NodeDepsError("node: expected Node.js (>= 18) on PATH to run the peer libraries, found none")
    if (PEERS_DIR / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise NodeDepsError(
            f"npm: expected on PATH to install the peer libraries into {PEERS_DIR / 'node_modules'}, found none"
        )
    done = subprocess.run(
        [npm, "ci", "--prefix", str(PEERS_DIR), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise NodeDepsError(f"npm ci --prefix {PEERS_DIR} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def crowd_scenarios(
    seed: int,
    devices: int,
    *,
    join_max_s: float = 10.0,
    command_s: float = 60.0,
    lead_s: float = 3.0,
    end_s: float = 70.0,
    checkpoints_s: tuple[float, ...] = (),
) -> list[Scenario]:
    """One scenario per device: joins uniform over [0, join_max_s), seeded; the rest shared."""
    joins = np.random.default_rng([seed, 0x6A6F696E]).uniform(0.0, join_max_s, devices)
    return [Scenario(float(j), command_s, lead_s, end_s, checkpoints_s) for j in joins]


def _per_device(scenario: Scenario | Sequence[Scenario], devices: int) -> list[Scenario]:
    scenarios = [scenario] * devices if isinstance(scenario, Scenario) else list(scenario)
    if len(scenarios) != devices:
        raise ValueError(f"scenario: expected one or {devices} scenarios, found {len(scenarios)}")
    first = scenarios[0]
    for s in scenarios:
        if (s.command_s, s.lead_s, s.end_s, s.checkpoints_s) != (first.command_s, first.lead_s, first.end_s, first.checkpoints_s):
            raise ValueError("scenario: devices may differ only in join_s; command_s, lead_s, end_s and checkpoints_s must agree")
    return scenarios


def export_run(
    directory: Path, model: str, seed: int, traces: Sequence[Trace], profiles: Sequence[DeviceProfile], scenarios: Sequence[Scenario]
) -> None:
    """Write what run.mjs reads: meta.json and d<i>.up.f32 / d<i>.down.f32 (little-endian float32 ms)."""
    first = scenarios[0]
    meta = {
        "model": model,
        "seed": seed,
        "cell_s": traces[0].cell_s,
        "scenario": {
            "join_s": [s.join_s for s in scenarios],
            "command_s": first.command_s,
            "lead_s": first.lead_s,
            "end_s": first.end_s,
            "checkpoints_s": list(first.checkpoints_s),
        },
        "devices": [
            {
                "offset_ns": p.offset_ns,
                "system_ppm": p.system_ppm,
                "resolution_ns": p.resolution_ns,
                "step_at_s": p.step_at_s,
                "step_ns": p.step_ns,
            }
            for p in profiles
        ],
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    for i, trace in enumerate(traces):
        trace.up_ms.astype("<f4").tofile(directory / f"d{i}.up.f32")
        trace.down_ms.astype("<f4").tofile(directory / f"d{i}.down.f32")


def run_node(directory: Path) -> dict[str, Any]:
    """Run bench/peers/run.mjs on an exported directory; its JSON, with null turned to NaN."""
    ensure_node_deps()
    done = subprocess.run(["node", str(RUNNER), str(directory)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"node {RUNNER.name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(done.stdout)
    systems: dict[str, Any] = out["systems"]
    for result in systems.values():
        result["start_error_ms"] = [math.nan if v is None else float(v) for v in result["start_error_ms"]]
        result["checkpoint_errors_ms"] = [
            [math.nan if v is None else float(v) for v in row] for row in result["checkpoint_errors_ms"]
        ]
    return systems


def run_peers_on(
    model: str, seed: int, traces: Sequence[Trace], profiles: Sequence[DeviceProfile], scenarios: Sequence[Scenario]
) -> dict[str, Any]:
    """Every peer system on the given traces and clocks: run.mjs's per-system results."""
    with tempfile.TemporaryDirectory(prefix="unisono-peers-") as tmp:
        export_run(Path(tmp), model, seed, traces, profiles, scenarios)
        return run_node(Path(tmp))


def make_world(
    model: str, seed: int, devices: int, end_s: float, *, asym_ms: float = 0.0
) -> tuple[list[Trace], list[DeviceProfile]]:
    """The traces (1 ms cells, ``end_s`` long) and phone clocks shared by Unisono and the peers."""
    traces = [make_trace(model, seed, i, end_s, asym_ms=asym_ms, cell_s=CELL_S) for i in range(devices)]
    profiles = [make_device(seed, i) for i in range(devices)]
    return traces, profiles


def run_peers(
    model: str, seed: int, devices: int, scenario: Scenario | Sequence[Scenario], *, asym_ms: float = 0.0
) -> dict[str, list[float]]:
    """Start errors (ms, NaN = never started) per device of each peer system ('ircam-sync', 'timesync', 'naive').

    ``scenario``: one for all devices, or one per device (they may differ only in ``join_s``).
    Devices are ``make_device(seed, i)`` on ``make_trace(model, seed, i, end_s, asym_ms=asym_ms)``.
    """
    scenarios = _per_device(scenario, devices)
    traces, profiles = make_world(model, seed, devices, scenarios[0].end_s, asym_ms=asym_ms)
    systems = run_peers_on(model, seed, traces, profiles, scenarios)
    return {name: systems[name]["start_error_ms"] for name in SYSTEMS}


def percentiles(errors_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of |error| over the devices that started (numpy's linear percentiles), and how many did."""
    values = np.abs(np.asarray([e for e in errors_ms if math.isfinite(e)], dtype=float))
    if len(values) == 0:
        return {"started": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"started": len(values), "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max())}


def format_table(devices: int, rows: dict[str, Sequence[float]]) -> str:
    """A markdown table of |start error| percentiles, one row per system."""
    lines = [
        "| system | started | \\|error\\| p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, errors in rows.items():
        p = percentiles(errors)
        lines.append(
            f"| {name} | {p['started']}/{devices} | {p['p50']:.2f} | {p['p95']:.2f} | {p['p99']:.2f} | {p['max']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="4g")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--asym-ms", type=float, default=0.0, help="constant extra uplink delay (path asymmetry)")
    parser.add_argument("--join-max-s", type=float, default=10.0, help="joins uniform over [0, this)")
    parser.add_argument("--command-s", type=float, default=60.0)
    parser.add_argument("--lead-s", type=float, default=3.0)
    parser.add_argument("--end-s", type=float, default=70.0)
    args = parser.parse_args(argv)
    if not args.command_s + args.lead_s <= args.end_s:
        parser.error("--end-s: expected at least --command-s + --lead-s")

    began = time.monotonic()
    scenarios = crowd_scenarios(
        args.seed, args.devices, join_max_s=args.join_max_s, command_s=args.command_s, lead_s=args.lead_s, end_s=args.end_s
    )
    traces, profiles = make_world(args.model, args.seed, args.devices, args.end_s, asym_ms=args.asym_ms)
    peers = run_peers_on(args.model, args.seed, traces, profiles, scenarios)
    unisono = [simulate(t, p, s).start_error_ms for t, p, s in zip(traces, profiles, scenarios)]
    rows: dict[str, Sequence[float]] = {"unisono": unisono}
    rows.update({name: peers[name]["start_error_ms"] for name in SYSTEMS})
    print(
        f"model {args.model}, seed {args.seed}, {args.devices} devices, joins over 0-{args.join_max_s:g} s, "
        f"command at {args.command_s:g} s, lead {args.lead_s:g} s, asym {args.asym_ms:g} ms"
    )
    print(format_table(args.devices, rows))
    print(f"({time.monotonic() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
