"""bench.peers: the fake transport, the start-error sign, and a short lan run of the real npm libraries."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.netmodels import DeviceProfile, Trace
from bench.peers import PEERS_DIR, SYSTEMS, ensure_node_deps, export_run, run_node, run_peers
from bench.virtual import Scenario


@pytest.fixture(scope="module", autouse=True)
def node_deps() -> None:
    ensure_node_deps()


CHANNEL_SCRIPT = """
import { Channel } from './transport.mjs';
import { VirtualTime } from './virtual-time.mjs';
const vt = new VirtualTime();
// 10 ms cells: 50 ms, 1 ms, gone, 1 ms, 1 ms
const ch = new Channel(vt, Float32Array.from([50, 1, NaN, 1, 1]), 0.01);
const got = [];
for (const [name, t] of [['a', 0.0], ['b', 0.01], ['c', 0.02], ['d', 0.03], ['e', 0.049]]) {
  vt.at(t, () => ch.send(() => got.push([name, vt.nowS])));
}
await vt.run(1.0);
console.log(JSON.stringify({ got, sent: ch.sent, dropped: ch.dropped }));
"""


def test_channel_never_overtakes_and_drops_messages_sent_while_the_network_is_gone() -> None:
    """Later quick messages wait behind a slow one (FIFO at equal times); one sent in a NaN cell never arrives."""
    done = subprocess.run(
        ["node", "--input-type=module", "-e", CHANNEL_SCRIPT], cwd=PEERS_DIR, capture_output=True, text=True, check=True
    )
    out = json.loads(done.stdout)
    assert [name for name, _ in out["got"]] == ["a", "b", "d", "e"]
    assert [t for _, t in out["got"]] == pytest.approx([0.05, 0.05, 0.05, 0.05])
    assert (out["sent"], out["dropped"]) == (5, 1)


def constant_trace(up_ms: float, down_ms: float, duration_s: float) -> Trace:
    n = int(round(duration_s / 0.001))
    return Trace("const", np.full(n, up_ms, np.float32), np.full(n, down_ms, np.float32), 0.001)


def test_a_constant_asymmetry_makes_every_system_start_early_by_half_of_it(tmp_path: Path) -> None:
    """Uplink 15 ms, downlink 5 ms, no skew: each two-way method believes the server 5 ms ahead, so starts 5 ms early."""
    profile = DeviceProfile(offset_ns=3_000_000_000, system_ppm=0.0, audio_ppm=0.0, resolution_ns=100_000)
    scenario = Scenario(join_s=1.0, command_s=20.0, lead_s=2.0, end_s=25.0)
    export_run(tmp_path, "const", 1, [constant_trace(15.0, 5.0, 25.0)], [profile], [scenario])
    systems = run_node(tmp_path)
    for name in SYSTEMS:
        assert systems[name]["start_error_ms"][0] == pytest.approx(-5.0, abs=0.15), name


def test_a_fast_clock_makes_the_naive_baseline_start_early_by_its_drift_since_join(tmp_path: Path) -> None:
    """+100 ppm, symmetric 5 ms: one ping at 1 s, a start due at 21 s comes 2 ms early (+-0.1 ms)."""
    profile = DeviceProfile(offset_ns=-2_000_000_000, system_ppm=100.0, audio_ppm=0.0, resolution_ns=100_000)
    scenario = Scenario(join_s=1.0, command_s=19.0, lead_s=2.0, end_s=22.0)
    export_run(tmp_path, "const", 1, [constant_trace(5.0, 5.0, 22.0)], [profile], [scenario])
    assert run_node(tmp_path)["naive"]["start_error_ms"][0] == pytest.approx(-2.0, abs=0.1)


def test_three_lan_devices_sync_with_every_peer_system() -> None:
    """30 s virtual on lan: all systems start every device; IRCAM and timesync within 50 ms."""
    scenarios = [Scenario(join_s, 25.0, 3.0, 30.0) for join_s in (0.0, 1.3, 2.7)]
    errors = run_peers("lan", 3, 3, scenarios)
    assert set(errors) == set(SYSTEMS)
    for name, values in errors.items():
        assert len(values) == 3 and all(math.isfinite(v) for v in values), name
    for name in ("ircam-sync", "timesync"):
        assert max(abs(v) for v in errors[name]) < 50.0, name
