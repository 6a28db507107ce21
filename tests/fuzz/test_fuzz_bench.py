"""bench.fuzz smoke test: a short campaign prints its table and exits 0; a broken decoder is a crash and exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fuzz.targets import MESSAGE_SEEDS, Target

REPO = Path(__file__).resolve().parents[2]


def _broken_decoder(data: bytes) -> str:
    """A decoder with the bug the campaign exists to find: a raw KeyError on some inputs."""
    if len(data) % 3 == 0:
        raise KeyError("type")
    return "ok"


BROKEN = Target("broken", _broken_decoder, MESSAGE_SEEDS)


def _fuzz(*args: str, crash_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--crash-dir", str(crash_dir), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_short_campaign_prints_the_table(tmp_path: Path) -> None:
    """Every real target runs its share of 700 inputs without a crash, and the table has a row for each."""
    result = _fuzz("--inputs", "700", "--seed", "3", crash_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| target | inputs | outcome kinds (count) | crashes | inputs/s")
    by_target = {row.split(" | ")[0][2:]: row.split(" | ") for row in rows[1:]}
    assert set(by_target) == {
        "protocol.participant", "protocol.organizer", "protocol.to_participant", "protocol.to_organizer",
        "sntp", "showfile", "api", "**total**",
    }  # fmt: skip
    assert all(cells[1] == "100" and cells[3] == "0" for name, cells in by_target.items() if name != "**total**")
    assert by_target["**total**"][1] == "700"
    assert "MalformedMessage" in by_target["protocol.participant"][2]
    assert not list(tmp_path.iterdir())


def test_a_crashing_decoder_fails_the_campaign(tmp_path: Path) -> None:
    """A decoder raising KeyError is reported as a crash, its input is written, and the exit status is 1."""
    result = _fuzz("--inputs", "200", "--target", f"protocol.participant,tests.fuzz.test_fuzz_bench:BROKEN", crash_dir=tmp_path)
    assert result.returncode == 1
    assert "CRASH broken: KeyError: 'type'" in result.stderr
    broken_row = next(line for line in result.stdout.splitlines() if line.startswith("| broken |")).split(" | ")
    assert broken_row[1] == "100" and int(broken_row[3]) > 0
    inputs = sorted(tmp_path.glob("broken-*.bin"))
    assert inputs and all(len(path.read_bytes()) % 3 == 0 for path in inputs)
    assert "KeyError" in inputs[0].with_suffix(".txt").read_text()
    assert not list(tmp_path.glob("protocol.participant-*"))
