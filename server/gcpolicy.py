"""Garbage collection for a server holding tens of thousands of long-lived objects.

Every connected phone keeps a sync session with a window of up to 256 samples:
at 15,000 phones, millions of objects that live as long as the connection.
CPython's cyclic collector walks the older generations now and then, and a
walk over millions of objects stopped the event loop for 380 ms in the scale
bench (and every timestamp with it). Almost none of it is garbage: refcounting
frees a session's samples when its phone leaves.

So a serving process moves what has survived into the permanent generation
every second (``gc.freeze``), where the collector does not look, and
keeps young collections small. Cyclic garbage that was frozen (a closed
connection's objects) is collected later, in a full pass made only while no
show is scheduled or playing, at most every few minutes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("unisono.gc")

# Allocations between young collections: a small young generation is quick to walk.
GEN0_THRESHOLD = 10_000
# Young collections between two collections of the middle generation: more than
# happen between two freezes, so the middle generation (up to 100,000
# survivors; its walk took 40-110 ms in the 15,000-phone bench) is frozen, not walked.
GEN1_THRESHOLD = 1000
# gc.freeze moves the tracked objects aside in O(1) (a list splice).
FREEZE_EVERY_S = 1.0
# A full collection (unfrozen) while the show is idle, at most this often.
FULL_EVERY_S = 600.0


async def manage(show_busy: Callable[[], bool]) -> None:
    """Freeze survivors every FREEZE_EVERY_S; collect fully while ``show_busy()`` is false. Runs until cancelled."""
    stall_log = os.environ.get("UNISONO_STALL_LOG")
    if stall_log:
        from server import watchdog

        watchdog.start(stall_log, float(os.environ.get("UNISONO_STALL_MS", watchdog.STALL_S * 1000)) / 1000)
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, 1_000_000)
    gc.freeze()
    last_full = time.monotonic()
    try:
        while True:
            await asyncio.sleep(FREEZE_EVERY_S)
            now = time.monotonic()
            if not show_busy() and now - last_full >= FULL_EVERY_S:
                began = time.perf_counter()
                gc.unfreeze()
                collected = gc.collect()
                log.info("full garbage collection: %d objects freed in %.0f ms", collected, (time.perf_counter() - began) * 1000)
                last_full = now
            gc.freeze()
    finally:
        gc.unfreeze()
