"""`unisono check`: exit 0 and a summary for a good show, 1 and every error for a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import DEMO_SHOW_PATH, main
from tests.conftest import write_tone_wav
from tests.server.test_showfile import GOOD


def test_check_good_show_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid show exits 0 and names each group with its track, length, weight and cues."""
    write_tone_wav(tmp_path / "red.wav", 3.0)
    (tmp_path / "sub").mkdir()
    write_tone_wav(tmp_path / "sub" / "blue.wav", 4.0)
    (tmp_path / "show.toml").write_text(GOOD, encoding="utf-8")
    assert main(["check", str(tmp_path / "show.toml")]) == 0
    out = capsys.readouterr().out
    assert "ok: 'Place du Marché', 2 groups" in out
    assert "red: red.wav, 0:03, weight 2, 2 cues" in out
    assert "blue: blue.wav, 0:04, weight 1, 0 cues" in out


def test_check_bad_show_lists_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid show exits 1 and prints each error (file:line: key: expected ..., found ...) and a count."""
    write_tone_wav(tmp_path / "red.wav", 3.0)
    show = tmp_path / "show.toml"
    show.write_text(GOOD.replace("weight = 2", "weight = 0"), encoding="utf-8")
    assert main(["check", str(show)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"{show}:11: groups[0].weight: expected a number above 0 and at most 1000000, found integer 0" in err
    assert any(line.startswith(f"{show}:26: groups[1].track: expected an existing audio file") for line in err)
    assert err[-1] == f"{show}: 2 errors"


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A show file that does not exist exits 1 with a message naming it."""
    assert main(["check", str(tmp_path / "none.toml")]) == 1
    assert "none.toml: cannot read the show file" in capsys.readouterr().err


def test_check_the_demo_show_with_its_tracks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo show checks out against its generated tracks (--tracks)."""
    from server.demo import ensure_demo_tracks

    ensure_demo_tracks(tmp_path)
    assert main(["check", "--tracks", str(tmp_path), str(DEMO_SHOW_PATH)]) == 0
    assert "red: demo-red.wav, 2:30, weight 1, 5 cues" in capsys.readouterr().out


def test_prepare_cuts_every_track_and_serve_uses_the_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`unisono prepare` writes a segment manifest per track; the show serve builds points its groups at them."""
    import json

    from server.cli import prepared
    from server.showfile import load_show

    write_tone_wav(tmp_path / "red.wav", 3.0)
    (tmp_path / "sub").mkdir()
    write_tone_wav(tmp_path / "sub" / "blue.wav", 4.0)
    (tmp_path / "show.toml").write_text(GOOD, encoding="utf-8")
    data = tmp_path / "var"
    assert main(["prepare", str(tmp_path / "show.toml"), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "red: " in out and out.count(".json") == 2
    show = prepared(load_show(tmp_path / "show.toml"), data)
    tracks = {group.name: group.track for group in show.groups}
    assert tracks == {"red": data / "prepared" / "red.json", "blue": data / "prepared" / "blue.json"}
    manifest = json.loads(tracks["blue"].read_text(encoding="utf-8"))
    assert manifest["frames"] == 4 * manifest["sample_rate"]
    assert [group.duration_ns for group in show.groups] == [3_000_000_000, 4_000_000_000]


def _small_show(tmp_path: Path) -> Path:
    from tests.conftest import SMALL_SHOW_TOML

    for group in ("red", "blue"):
        write_tone_wav(tmp_path / f"{group}.wav", 2.0)
    show = tmp_path / "show.toml"
    show.write_text(SMALL_SHOW_TOML, encoding="utf-8")
    return show


@pytest.fixture
def no_log_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve installs a root log handler on this process's stderr; a test must not leave one behind
    (it would write into a later test's closed capture)."""
    monkeypatch.setattr("server.cli.configure_logging", lambda *args, **kwargs: None)


@pytest.mark.usefixtures("no_log_setup")
def test_serve_says_when_redis_cannot_be_reached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    show = _small_show(tmp_path)
    code = main(["serve", str(show), "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "var"), "--redis", "redis://127.0.0.1:1/0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in err and "start redis-server or check --redis" in err


@pytest.mark.usefixtures("no_log_setup")
def test_serve_says_when_its_state_file_is_unusable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    show = _small_show(tmp_path)
    data = tmp_path / "var"
    data.mkdir()
    (data / "unisono.sqlite3").write_bytes(b"not a database " * 100)
    code = main(["serve", str(show), "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data)])
    assert code == 1
    assert "unisono.sqlite3: cannot use the state file" in capsys.readouterr().err
