"""Memory of one device's sync session on the server, by number of samples held.

``python -m bench.memory``: builds sessions fed ``n`` answered pings each (a
join burst is 24-40; a full window is ``EstimatorConfig.window``) and reports
what tracemalloc counts per session. Over an hour-long show a session's
window fills up, so this is what 15,000 phones cost the server beyond their
connections.
"""

from __future__ import annotations

import argparse
import random
import tracemalloc
from collections.abc import Sequence

from clock.estimator import EstimatorConfig
from clock.session import DeviceSession

BASE_NS = 1_795_000_000_000_000_000  # late 2026, as a server clock reads


def session_bytes(samples: int, sessions: int = 300, seed: int = 1) -> float:
    """Mean bytes allocated per session holding ``samples`` samples (2 s apart, 1-3 ms paths)."""
    rng = random.Random(seed)
    kept = []
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for index in range(sessions):
        session = DeviceSession()
        now = BASE_NS + index
        offset = rng.randint(-10**9, 10**9)
        for _ in range(samples):
            seq, t0 = session.poll(now) or (None, now)
            if seq is None:  # not due yet by the policy: ask as if it were
                now = session.next_deadline(now)
                seq, t0 = session.poll(now)  # type: ignore[misc]
            up = rng.randint(1_000_000, 3_000_000)
            t1 = t0 + up - offset
            t2 = t1 + 50_000
            t3 = t2 + offset + rng.randint(1_000_000, 3_000_000)
            session.receive_pong(seq, t0 // 1000, t1 // 1000 * 1000, t2 // 1000 * 1000, t3)
            now = t3 + 1
        kept.append(session)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return total / sessions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=f"30,{EstimatorConfig().window}", help="comma-separated sample counts")
    args = parser.parse_args(argv)
    print("| samples held | KB per session |\n|---:|---:|")
    for count in (int(c) for c in args.samples.split(",")):
        print(f"| {count} | {session_bytes(count) / 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
