"""Show files on arbitrary input: a checked show, or ShowFileInvalid whose every error names a line and a key.

Arbitrary text and bytes (not UTF-8 included), arbitrary TOML documents, and
mutations of the demo show and the tests' show: never a raw KeyError,
TypeError, tomllib or Unicode error.
"""

from __future__ import annotations

import tomllib
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS, mutate

SHOWFILE = TARGETS["showfile"]
FAST = settings(max_examples=150, deadline=None)

TOML_KEYS = st.sampled_from(["title", "description", "groups", "name", "track", "weight", "cues", "at", "text_en", "colour", "vibrate", "x"])
TOML_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=60)


def _toml_value(value: Any) -> str:
    """``value`` as a TOML expression (inline tables and arrays); None becomes an empty table."""
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value if not 0xD800 <= ord(c) <= 0xDFFF) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


TOML_DOCUMENTS = st.dictionaries(
    TOML_KEYS,
    st.recursive(TOML_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TOML_KEYS, inner, max_size=4), max_leaves=10),
    max_size=4,
).map(lambda doc: "\n".join(f"{k} = {_toml_value(v)}" for k, v in doc.items()))


@FAST
@given(st.text(max_size=400))
@example("")
@example("[[groups]]\n[[groups.cues]]\n")
@example('title = "t"\n[[groups]]\nname = "a"\ntrack = "' + "x" * 5000 + '"\n')  # a track name longer than the system allows
@example('title = "t"\n[[groups]]\nname = "a"\ntrack = "a\\u0000b"\n')  # a NUL in a path
def test_arbitrary_text(text: str) -> None:
    """Arbitrary text is a show or a located ShowFileInvalid."""
    SHOWFILE.run(text.encode("utf-8", errors="surrogatepass"))


@FAST
@given(st.binary(max_size=400))
@example(b'title = "\xff"\n')
def test_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes, not UTF-8 included: ShowFileInvalid names the line of a bad byte."""
    SHOWFILE.run(data)


@FAST
@given(TOML_DOCUMENTS)
def test_arbitrary_toml_documents(text: str) -> None:
    """Valid TOML of every shape (wrong types, nesting, NaN, huge numbers) in the show's keys."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass  # a document the generator could not write as TOML is fuzz input all the same
    SHOWFILE.run(text.encode("utf-8"))


@FAST
@given(st.sampled_from(SHOWFILE.seeds), st.randoms(use_true_random=False))
def test_mutated_valid_shows(seed: bytes, rng: Any) -> None:
    """The demo show and the tests' show with bytes flipped, inserted, deleted or spliced."""
    SHOWFILE.run(mutate(seed, rng, SHOWFILE.seeds))


def test_seeds_are_valid_shows() -> None:
    """The mutation corpus starts from shows that load."""
    assert [SHOWFILE.run(seed) for seed in SHOWFILE.seeds] == ["ok", "ok"]
