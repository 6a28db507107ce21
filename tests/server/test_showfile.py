"""server.showfile: a good show parses; every bad one names file, key, line, expected and found."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.showfile import ShowError, ShowFileInvalid, language_of, load_show
from tests.conftest import write_tone_wav

GOOD = """\
title = "Place du Marché"

[description]
when_en = "Saturday, 18:00"
when_fr = "Samedi, 18 h"
text_en = "One hour together."

[[groups]]
name = "red"
track = "red.wav"
weight = 2

[[groups.cues]]
at = "0:02.5"
text_en = "Raise your hand"
text_fr = "Levez la main"
colour = "#F00"
vibrate = [200, 100, 200]

[[groups.cues]]
at = 1
text_fr = "Bienvenue"

[[groups]]
name = "blue"
track = "sub/blue.wav"
"""


@pytest.fixture
def show_dir(tmp_path: Path) -> Path:
    write_tone_wav(tmp_path / "red.wav", 3.0)
    (tmp_path / "sub").mkdir()
    write_tone_wav(tmp_path / "sub" / "blue.wav", 4.0)
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "show.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(directory: Path, text: str) -> list[ShowError]:
    path = write(directory, text)
    with pytest.raises(ShowFileInvalid) as info:
        load_show(path)
    return info.value.errors


def only_error(directory: Path, text: str) -> ShowError:
    errors = errors_of(directory, text)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def test_good_show_parses(show_dir: Path) -> None:
    """Title, description per language, groups with tracks, durations, weights and sorted cues."""
    show = load_show(write(show_dir, GOOD))
    assert show.title == "Place du Marché"
    assert [g.name for g in show.groups] == ["red", "blue"]
    red, blue = show.groups
    assert red.track == (show_dir / "red.wav").resolve() and red.duration_ns == 3_000_000_000
    assert (red.weight, blue.weight) == (2.0, 1.0)
    assert show.duration_ns == 4_000_000_000
    assert [c.at_us for c in red.cues] == [1_000_000, 2_500_000]
    assert red.cues[1].colour == "#ff0000" and red.cues[1].vibrate == (200, 100, 200)
    assert dict(red.cues[1].text) == {"en": "Raise your hand", "fr": "Levez la main"}
    # A text in one language only is shown in both.
    assert dict(red.cues[0].text) == {"en": "Bienvenue", "fr": "Bienvenue"}
    assert blue.cues == ()
    assert show.description["fr"]["when"] == "Samedi, 18 h"
    assert show.description["fr"]["text"] == "One hour together."
    assert show.description["en"]["where"] == ""


def test_demo_show_file_is_valid(tmp_path: Path) -> None:
    """server/demo_show.toml checks out against its generated tracks, with cues for both groups."""
    from server.cli import demo_show_file

    show = demo_show_file(tmp_path)
    assert [g.name for g in show.groups] == ["red", "blue"]
    assert all(len(g.cues) >= 3 for g in show.groups)
    assert show.description["fr"]["text"] and show.description["en"]["text"]


@pytest.mark.parametrize(
    ("change", "key", "line", "expected", "found"),
    [
        (("at = 1", 'at = "9:99"'), "groups[0].cues[1].at", 21, "a time in the track", "string '9:99'"),
        (("at = 1", "at = 3.5"), "groups[0].cues[1].at", 21, "from 0 to 0:03", "after the track's end"),
        (("at = 1", "at = -1"), "groups[0].cues[1].at", 21, "a time in the track", "integer -1"),
        (("at = 1", "at = true"), "groups[0].cues[1].at", 21, "a time in the track", "boolean true"),
        (("at = 1\n", ""), "groups[0].cues[1].at", 20, "a time in the track", "nothing (missing)"),
        (('colour = "#F00"', 'colour = "red"'), "groups[0].cues[0].colour", 17, '"#rgb" or "#rrggbb"', "string 'red'"),
        (("vibrate = [200, 100, 200]", "vibrate = [200, -5]"), "groups[0].cues[0].vibrate[1]", 18, "each 0 to 10000", "integer -5"),
        (("vibrate = [200, 100, 200]", "vibrate = []"), "groups[0].cues[0].vibrate", 18, "1 to 32 whole milliseconds", "an array of 0 items"),
        (('text_fr = "Bienvenue"', "text_fr = 7"), "groups[0].cues[1].text_fr", 22, "a string of at most 200 characters", "integer 7"),
        (('text_fr = "Bienvenue"', 'text_fr = "' + "x" * 201 + '"'), "groups[0].cues[1].text_fr", 22, "at most 200", "a string of 201 characters"),
        (("weight = 2", "weight = 0"), "groups[0].weight", 11, "a number above 0", "integer 0"),
        (("weight = 2", 'weight = "2"'), "groups[0].weight", 11, "a number above 0", "string '2'"),
        (('track = "red.wav"', 'track = "nope.wav"'), "groups[0].track", 10, "an existing audio file", "nope.wav"),
        (('name = "blue"', 'name = "red"'), "groups[1].name", 25, "a name no other group has", "a second group named 'red'"),
        (('name = "blue"', 'name = "b l u e"'), "groups[1].name", 25, "letters, digits, _ or -", "string 'b l u e'"),
        (('name = "blue"\n', ""), "groups[1].name", 24, "a group name", "nothing (missing)"),
        (('title = "Place du Marché"', 'title = ""'), "title", 1, "a string of 1 to 200 characters", "string ''"),
        (('title = "Place du Marché"', 'title = "Place du Marché"\ntitel = "x"'), "titel", 2, "one of the keys title, description, groups", "the unknown key 'titel'"),
        (('when_fr = "Samedi, 18 h"', 'quand = "Samedi"'), "description.quand", 5, "one of the keys when_en", "the unknown key 'quand'"),
        (('weight = 2', 'weight = 2\nsize = 3'), "groups[0].size", 12, "one of the keys name, track, weight, cues", "the unknown key 'size'"),
        (('colour = "#F00"', 'color = "#F00"'), "groups[0].cues[0].color", 17, "one of the keys at, text_fr", "the unknown key 'color'"),
    ],
)
def test_each_error_names_file_key_line_expected_and_found(
    show_dir: Path, change: tuple[str, str], key: str, line: int, expected: str, found: str
) -> None:
    """One mistake gives one error naming the file, the key path, its line, what was expected and found."""
    old, new = change
    assert old in GOOD
    error = only_error(show_dir, GOOD.replace(old, new, 1))
    assert error.file == show_dir / "show.toml"
    assert (error.key, error.line) == (key, line)
    assert expected in error.expected, error.expected
    assert found in error.found, error.found
    assert str(error).startswith(f"{show_dir / 'show.toml'}:{line}: {key}: expected ")


def test_every_error_is_listed_in_line_order(show_dir: Path) -> None:
    """Several mistakes are all reported, sorted by line."""
    text = GOOD.replace("weight = 2", "weight = -1").replace('colour = "#F00"', 'colour = "#F0"').replace('name = "blue"', 'name = "red"')
    errors = errors_of(show_dir, text)
    assert [e.key for e in errors] == ["groups[0].weight", "groups[0].cues[0].colour", "groups[1].name"]
    assert [e.line for e in errors] == sorted(e.line or 0 for e in errors)


def test_toml_syntax_error_gives_its_line(show_dir: Path) -> None:
    """A TOML syntax error is one error with tomllib's line and 'valid TOML' expected."""
    error = only_error(show_dir, GOOD.replace("weight = 2", "weight = = 2"))
    assert error.line == 11 and error.expected == "valid TOML" and error.found.startswith("a syntax error")


def test_missing_groups_and_not_a_wav(show_dir: Path) -> None:
    """No groups at all is an error; so is a track that is not a readable WAV."""
    error = only_error(show_dir, 'title = "x"\n')
    assert (error.key, error.found) == ("groups", "nothing (missing)")
    (show_dir / "bad.wav").write_bytes(b"not audio")
    error = only_error(show_dir, GOOD.replace("red.wav", "bad.wav"))
    assert error.key == "groups[0].track" and "an audio file" in error.expected and "not a readable WAV file" in error.found
    (show_dir / "bad.mp3").write_bytes(b"not audio either")
    error = only_error(show_dir, GOOD.replace("red.wav", "bad.mp3"))
    assert error.key == "groups[0].track" and error.line == 10


def test_times_in_clock_notation(show_dir: Path) -> None:
    """at accepts seconds, "m:ss", "m:ss.s" and "h:mm:ss"; minutes over 59 only without hours."""
    write_tone_wav(show_dir / "long.wav", 4000.0, sample_rate=10)
    cases = {'"1:05"': 65_000_000, '"65:00"': 3_900_000_000, '"1:00:05"': 3_605_000_000, "2.25": 2_250_000, '"0:01.25"': 1_250_000}
    for text, at_us in cases.items():
        show = load_show(write(show_dir, f'title = "t"\n[[groups]]\nname = "a"\ntrack = "long.wav"\n[[groups.cues]]\nat = {text}\n'))
        assert show.groups[0].cues[0].at_us == at_us, text
    for bad in ('"1:60"', '"1:60:00"', '"1:5"', '"soon"'):
        error = only_error(show_dir, f'title = "t"\n[[groups]]\nname = "a"\ntrack = "long.wav"\n[[groups.cues]]\nat = {bad}\n')
        assert (error.key, error.line) == ("groups[0].cues[0].at", 6), bad


def test_language_of_tags() -> None:
    """fr, fr-FR, FR_ca mean French; anything else (or nothing) English."""
    assert [language_of(t) for t in ("fr", "fr-FR", "FR_ca", "en-GB", "de", "", None, "french")] == [
        "fr", "fr", "fr", "en", "en", "en", "en", "en"
    ]


def test_a_prepared_manifest_is_a_track(tmp_path: Path) -> None:
    """A group whose track is a segment manifest from server.prepare gets the manifest's duration."""
    from server.prepare import prepare_track

    source = write_tone_wav(tmp_path / "source.wav", 2.0, sample_rate=48000)
    prepare_track(source, tmp_path / "prepared")
    show = load_show(write(tmp_path, 'title = "t"\n[[groups]]\nname = "a"\ntrack = "prepared/source.json"\n[[groups.cues]]\nat = 1.5\ntext_en = "x"\n'))
    assert show.groups[0].track.name == "source.json"
    assert show.groups[0].duration_ns == 2_000_000_000
