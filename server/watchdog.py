"""A stall watchdog for diagnosis: what the event loop was doing while it stopped for long.

Off unless ``UNISONO_STALL_LOG=PATH`` is set when ``serve`` starts. A timer on
the loop beats every BEAT_S; a thread looks every SAMPLE_S and, while the
latest beat is more than ``UNISONO_STALL_MS`` (default STALL_S) old, samples the main thread's stack
(``sys._current_frames``). Each stall ends in a line with its length, how much
of it the main thread ran and waited for a CPU (``/proc/self/task/TID/schedstat``:
waiting is another process holding the core), and its most sampled stacks;
collector passes longer than GC_LOG_S are logged too (``gc.callbacks``).
The thread takes the GIL to sample, so calls that release it (socket writes,
SQLite) are over-represented: a stall's length and run/wait split are exact,
its stacks say where to look.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from collections import Counter
from types import FrameType
from typing import Any, TextIO

BEAT_S = 0.002
SAMPLE_S = 0.001
STALL_S = 0.020
GC_LOG_S = 0.005
# Frames of a stack kept (innermost last), and stacks printed per stall.
STACK_DEPTH = 14
TOP_STACKS = 4


def _schedstat(tid: int) -> tuple[float, float]:
    """(ran_s, waited_s) of thread ``tid`` so far, or (nan, nan) off Linux."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            ran, waited, _ = f.read().split()
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return float("nan"), float("nan")


def _stack(frame: FrameType | None) -> str:
    names: list[str] = []
    while frame is not None and len(names) < STACK_DEPTH:
        code = frame.f_code
        names.append(f"{os.path.basename(code.co_filename)}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return ";".join(reversed(names))


def start(path: str, stall_s: float = STALL_S) -> None:
    """Start beating on the running loop and watching from a daemon thread; lines go to ``path``."""
    loop = asyncio.get_running_loop()
    out: TextIO = open(path, "a", buffering=1)
    main = threading.main_thread()
    main_id = main.ident
    main_tid = main.native_id
    beat = [time.monotonic()]
    lock = threading.Lock()

    def tick() -> None:
        beat[0] = time.monotonic()
        loop.call_later(BEAT_S, tick)

    tick()
    gc_began = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
            return
        took = time.perf_counter() - gc_began[0]
        if took >= GC_LOG_S:
            with lock:
                out.write(f"{time.time():.3f} gc gen{info['generation']} {took * 1000:.1f} ms, {info['collected']} collected\n")

    gc.callbacks.append(on_gc)

    def watch() -> None:
        stacks: Counter[str] = Counter()
        since: float | None = None
        sched0 = (0.0, 0.0)
        while True:
            time.sleep(SAMPLE_S)
            now = time.monotonic()
            late = now - beat[0]
            if late > stall_s:
                if since is None:
                    since = beat[0]
                    sched0 = _schedstat(main_tid or 0)
                frame = sys._current_frames().get(main_id or 0)
                stacks[_stack(frame)] += 1
            elif since is not None:
                ran, waited = _schedstat(main_tid or 0)
                total = sum(stacks.values())
                with lock:
                    out.write(
                        f"{time.time():.3f} stall {(beat[0] - since) * 1000:.0f} ms: main thread ran "
                        f"{(ran - sched0[0]) * 1000:.0f} ms, waited for a CPU {(waited - sched0[1]) * 1000:.0f} ms, "
                        f"{total} samples\n"
                    )
                    for stack, count in stacks.most_common(TOP_STACKS):
                        out.write(f"    {count:4d} {stack}\n")
                stacks.clear()
                since = None

    threading.Thread(target=watch, name="stall-watchdog", daemon=True).start()
