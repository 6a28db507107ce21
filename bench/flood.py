"""Floods against honest devices: server CPU and sync with and without flooding connections.

    python -m bench.flood [--devices 50] [--flooders 0,20] [--warmup-s 5] [--seed 1] [--out bench/RESULTS.md]

Each row is one whole ``bench.sync`` run (the server in its own thread and
event loop, ``--devices`` honest SimDevices on the jitter network, a start
after ``--warmup-s``), with ``N`` flooding connections in a separate process
for the whole run. A flooder joins, then sends unsolicited pongs (valid
frames, a seq no ping had) as fast as its socket takes them; when the server
closes it (1008 "rate limit: ..."), it reconnects at once and floods again:
a persistent attacker, not a polite one.

Server CPU is the server thread's own CPU time (``pthread_getcpuclockid``)
over the run's wall time, so neither the devices nor the flooders count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

from bench.sync import BenchConfig, ServerThread, Summary, run_devices, summarize
from protocol import PROTOCOL_VERSION, encode
from protocol.messages import Join, Pong

JOIN = encode(Join(v=PROTOCOL_VERSION, device_id=None, client="bench.flood"))
UNSOLICITED = encode(Pong(seq=4_000_000_000, t0_us=1, t1_us=2, t2_us=3))


@dataclass(frozen=True)
class FloodCounts:
    sent: int  # frames the flooders wrote
    closed_rate_limit: int  # connections the server closed with "rate limit: ..."
    closed_other: int


async def _flooder(url: str, stop: Any, counts: list[int], errors: list[str]) -> None:
    while not stop.is_set():
        try:
            async with websockets.connect(url, max_size=2**20, max_queue=None, ping_interval=None) as ws:
                await ws.send(JOIN)
                while not stop.is_set():
                    for _ in range(50):
                        await ws.send(UNSOLICITED)
                    counts[0] += 50
                    await asyncio.sleep(0)  # let the connection read: a close from the server ends the send loop
        except websockets.ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            counts[1 if reason.startswith("rate limit") else 2] += 1
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
            counts[2] += 1
            errors.append(type(exc).__name__)
            await asyncio.sleep(0.05)


def _flood_process(url: str, flooders: int, stop: Any, out: Any) -> None:
    counts = [0, 0, 0]
    errors: list[str] = []

    async def main() -> None:
        await asyncio.gather(*(_flooder(url, stop, counts, errors) for _ in range(flooders)))

    try:
        asyncio.run(main())
    finally:
        if errors:
            print(f"flooders: {len(errors)} connections failed: {sorted(set(errors))}", file=sys.stderr)
        out.put(tuple(counts))


@dataclass(frozen=True)
class Row:
    flooders: int
    server_cpu_pct: float
    wall_s: float
    flood: FloodCounts
    summary: Summary


def _server_cpu_s(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def one_run(config: BenchConfig, flooders: int) -> Row:
    """A bench.sync run with ``flooders`` flooding connections alongside, and the server thread's CPU."""
    with tempfile.TemporaryDirectory(prefix="unisono-flood-") as tmp:
        server = ServerThread(Path(tmp))
        served = await asyncio.to_thread(server.start)
        thread = next(t for t in threading.enumerate() if t.name == "bench-server")
        process = None
        spawn = multiprocessing.get_context("spawn")
        queue, stop = spawn.Queue(), spawn.Event()
        counts = (0, 0, 0)
        try:
            cpu0, wall0 = _server_cpu_s(thread), time.monotonic()
            if flooders:
                # The flood lasts the run: joins, warm-up and the start, until every device has it.
                process = spawn.Process(target=_flood_process, args=(served.ws_url, flooders, stop, queue), daemon=True)
                process.start()
            results = await asyncio.wait_for(run_devices(config, served), config.timeout_s)
            cpu1, wall1 = _server_cpu_s(thread), time.monotonic()
            if process is not None:
                stop.set()
                counts = await asyncio.to_thread(queue.get, True, 30)
                process.join(10)
        finally:
            stop.set()
            await asyncio.to_thread(server.stop)
    return Row(flooders, 100 * (cpu1 - cpu0) / (wall1 - wall0), wall1 - wall0, FloodCounts(*counts), summarize(results))


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| flooding connections | server CPU % | flood frames sent | closed 'rate limit' / other "
        "| abs start error p50 / p95 / p99 / max (ms) | bound p99 (ms) | coverage | command to last schedule (ms) |",
        "|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        s = r.summary
        devices = f"{s.scheduled}/{s.devices}"
        lines.append(
            f"| {r.flooders} | {r.server_cpu_pct:.0f} | {r.flood.sent:,} | {r.flood.closed_rate_limit:,} / {r.flood.closed_other:,} "
            f"| {s.error_p50_ms:.3f} / {s.error_p95_ms:.3f} / {s.error_p99_ms:.3f} / {s.error_max_ms:.3f} "
            f"| {s.bound_p99_ms:.2f} | {s.coverage_pct:.1f} % ({devices}) | {s.schedule_last_ms:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--flooders", default="0,20", help="comma-separated counts, one run each (default: 0,20)")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lead-ms", type=int, default=5000, help="the start's lead (default: 5000, so a loaded server's safe lead passes)")
    parser.add_argument("--out", type=Path, default=None, help="append the result to this markdown file")
    args = parser.parse_args(argv)
    config = BenchConfig(devices=args.devices, seed=args.seed, warmup_s=args.warmup_s, lead_ms=args.lead_ms)
    rows = []
    for count in (int(c) for c in args.flooders.split(",")):
        row = asyncio.run(one_run(config, count))
        print(f"flooders {count}: server CPU {row.server_cpu_pct:.0f} %, {row.flood}", file=sys.stderr, flush=True)
        rows.append(row)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"`python -m bench.flood {' '.join(argv if argv is not None else sys.argv[1:])}`\n"
        f"({when}; {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"{args.devices} honest devices, jitter network, seed {args.seed}, warm-up {args.warmup_s:g} s)\n\n" + table(rows) + "\n"
    )
    print(block)
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as out:
            out.write("\n" + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
