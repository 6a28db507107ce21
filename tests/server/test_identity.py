"""Server-issued device ids: they verify under their secret only, and forgeries are replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.messages import DEVICE_ID_PATTERN
from server.identity import DEVICE_ID_CHARS, DeviceIds, issue, verify

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
NONCE = bytes(16)


def test_an_issued_id_matches_the_wire_pattern_and_verifies() -> None:
    """An id is 44 characters of [A-Za-z0-9_-] and verifies under its own secret."""
    device_id = issue(SECRET, NONCE)
    assert len(device_id) == DEVICE_ID_CHARS
    assert DEVICE_ID_PATTERN.fullmatch(device_id)
    assert verify(SECRET, device_id)


def test_an_id_is_deterministic_in_secret_and_nonce() -> None:
    """The same secret and random bytes give the same id; other bytes, another id."""
    assert issue(SECRET, NONCE) == issue(SECRET, NONCE)
    assert issue(SECRET, NONCE) != issue(SECRET, b"\x01" * 16)


def test_another_servers_id_does_not_verify() -> None:
    """An id issued under another secret is refused."""
    assert not verify(SECRET, issue(OTHER, NONCE))


@pytest.mark.parametrize(
    "device_id",
    [
        "scale-run-000001",  # an old, self-chosen id
        "A" * 44,
        "A" * 64,
        "",
        "é" * 44,
    ],
)
def test_unsigned_ids_do_not_verify(device_id: str) -> None:
    """Self-chosen, padded or non-ASCII ids are refused."""
    assert not verify(SECRET, device_id)


def test_any_changed_character_is_refused() -> None:
    """Changing any one character of a good id (nonce or tag) makes it fail."""
    good = issue(SECRET, NONCE)
    for i in range(len(good)):
        replacement = "B" if good[i] != "B" else "C"
        forged = good[:i] + replacement + good[i + 1 :]
        assert not verify(SECRET, forged), i


def test_a_non_canonical_nonce_encoding_is_refused() -> None:
    """The nonce's last base64 character carries 2 unused bits: another spelling of it is not the same id."""
    good = issue(SECRET, NONCE)  # nonce of zeros: 'AAAA...A' (22 chars)
    assert good[21] == "A"
    sneaky = good[:21] + "B" + good[22:]  # decodes to the same 16 bytes
    assert not verify(SECRET, sneaky)


def test_admit_keeps_a_good_id_and_replaces_any_other() -> None:
    """A verified id is kept (known); a forged or missing one gets a fresh id from the nonce."""
    ids = DeviceIds(SECRET)
    fresh, known = ids.admit(None, NONCE)
    assert not known and verify(SECRET, fresh)
    assert ids.admit(fresh, b"\x07" * 16) == (fresh, True)
    forged = issue(OTHER, NONCE)
    replaced, known = ids.admit(forged, b"\x07" * 16)
    assert not known and replaced != forged and replaced == issue(SECRET, b"\x07" * 16)


def test_short_secrets_and_wrong_nonces_are_a_callers_bug() -> None:
    """A secret under 32 bytes or a nonce not 16 bytes raises ValueError."""
    with pytest.raises(ValueError):
        DeviceIds(b"short")
    with pytest.raises(ValueError):
        issue(SECRET, b"\x00" * 8)


def test_the_secret_is_made_once_kept_private_and_replaced_if_unusable(tmp_path: Path) -> None:
    """The first start writes a 0600 secret the next one reads back; a corrupt file is replaced."""
    from server.app import load_or_create_device_secret
    from server.config import ServerConfig
    from server.store import SqliteStore

    config = ServerConfig(data_dir=tmp_path)
    store = SqliteStore(config.state_path)
    try:
        first = load_or_create_device_secret(config, store)
        assert len(first) == 32
        assert config.device_secret_path.stat().st_mode & 0o777 == 0o600
        assert load_or_create_device_secret(config, store) == first
        config.device_secret_path.write_text("not base64 at all!!")
        replaced = load_or_create_device_secret(config, store)
        assert replaced != first and load_or_create_device_secret(config, store) == replaced
    finally:
        store.close()


def test_the_default_connection_cap_follows_the_open_file_limit() -> None:
    """Without --max-connections the cap is the soft open-file limit minus the reserve."""
    import resource

    from server.app import max_connections
    from server.config import ServerConfig
    from server.security import FD_RESERVE

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert max_connections(ServerConfig()) == max(1, soft - FD_RESERVE)
    assert max_connections(ServerConfig(max_connections=7)) == 7
