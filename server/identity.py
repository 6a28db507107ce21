"""Server-issued device ids that a phone cannot forge.

An id is 16 random bytes and the first 16 bytes of their HMAC-SHA256 under
the server's secret, each in URL-safe base64 without padding, concatenated:
44 characters of ``[A-Za-z0-9_-]``, so it fits ``DEVICE_ID_PATTERN`` and the
wire does not change. Only a holder of the secret can make an id that
verifies, so a phone cannot pick another device's id (and with it its group)
by guessing: the tag is 128 bits.

A join whose id does not verify (forged, another server's, an old unsigned
one) is treated as a new device. The functions here are pure: the secret and
the random bytes come in as arguments.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# 16 random bytes (128 bits) so ids never collide; a 128-bit tag so an
# online forger needs ~2^127 tries on average.
NONCE_BYTES = 16
TAG_BYTES = 16
SECRET_BYTES = 32  # HMAC-SHA256's block-size-friendly key length (RFC 2104 section 3: at least the output length)
_NONCE_CHARS = 22  # base64 of 16 bytes, unpadded
DEVICE_ID_CHARS = 44


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _tag(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, b"unisono-device-id\x00" + nonce, hashlib.sha256).digest()[:TAG_BYTES]


def issue(secret: bytes, nonce: bytes) -> str:
    """A new device id from ``NONCE_BYTES`` random bytes (the caller draws them from ``secrets``)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce: expected {NONCE_BYTES} bytes, found {len(nonce)}")
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"secret: expected at least {SECRET_BYTES} bytes, found {len(secret)}")
    return _b64(nonce) + _b64(_tag(secret, nonce))


def verify(secret: bytes, device_id: str) -> bool:
    """Whether ``device_id`` was issued under ``secret``; the tag is compared in constant time."""
    if len(device_id) != DEVICE_ID_CHARS or not device_id.isascii():
        return False
    nonce_text = device_id[:_NONCE_CHARS]
    try:
        nonce = base64.urlsafe_b64decode(nonce_text + "==")
    except ValueError:
        return False
    # A non-canonical encoding (other trailing bits) of the same bytes is another id: refuse it.
    if len(nonce) != NONCE_BYTES or _b64(nonce) != nonce_text:
        return False
    expected = _b64(_tag(secret, nonce))
    return hmac.compare_digest(expected.encode("ascii"), device_id[_NONCE_CHARS:].encode("ascii"))


class DeviceIds:
    """Issues and checks ids under one secret: ``admit`` is what a join calls."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"secret: expected at least {SECRET_BYTES} bytes, found {len(secret)}")
        self._secret = secret

    def admit(self, claimed: str | None, nonce: bytes) -> tuple[str, bool]:
        """``(device_id, known)``: the claimed id if it verifies, else a new one from ``nonce``."""
        if claimed is not None and verify(self._secret, claimed):
            return claimed, True
        return issue(self._secret, nonce), False
