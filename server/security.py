"""Limits and access: who may open a websocket, how fast it may talk, what every response says.

- ``client_address``: the address a request comes from, taken from
  ``X-Forwarded-For`` only when the TCP peer is a trusted proxy; the
  ``remote_address_middleware`` puts it in ``request.remote`` so every
  per-address rule (the connection cap, the wrong-token ``Gate``) uses it.
- ``origin_refusal``: a browser's websocket from another site is refused
  (HTTP 403 before the handshake), so a page elsewhere cannot drive a
  participant's or the organizer's connection.
- ``ConnectionLimits``: at most N websockets per client address (an IPv6
  client's /64) and M in all, and at most R new ones a second per address,
  refused with HTTP 503 and ``Retry-After`` before the upgrade.
- ``TokenBucket``: a per-connection message rate; a flooder is closed with
  1008 ``rate limit: ...``. Pure: time is passed in.
- ``security_headers``: CSP without inline scripts, nosniff, no referrer
  (the organizer URL carries the token), no framing, a permissions policy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from protocol.errors import CLOSE_POLICY_VIOLATION, RemoteProtocolError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------- rate limit

# Messages a second and burst per connection. A participant's real rate is
# far below: one pong per ping (bursts of 12-40 pings 50 ms apart, so at most
# ~20/s with several in flight), a ready on change or every 30 s. An
# organizer sends a command now and then. 50/s sustained with 100 at once
# leaves a 2.5x margin over the join burst and cuts a flood to what 50 honest
# phones send.
RATE_PER_S = 50.0
RATE_BURST = 100


class RateLimited(RemoteProtocolError):
    """The connection sent messages faster than its bucket allows."""

    code = "rate_limited"
    close_code = CLOSE_POLICY_VIOLATION

    def __init__(self, rate_per_s: float, burst: int) -> None:
        super().__init__(f"rate limit: more than {rate_per_s:g} messages a second (burst {burst})")


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate_per_s``; each message takes one.

    Pure: ``now_ns`` is any monotonic clock in nanoseconds, passed in.
    """

    __slots__ = ("rate_per_ns", "burst", "_tokens", "_last_ns")

    def __init__(self, rate_per_s: float, burst: int, now_ns: int) -> None:
        if not rate_per_s > 0 or burst < 1:
            raise ValueError(f"expected a rate > 0 and a burst >= 1, found {rate_per_s}, {burst}")
        self.rate_per_ns = rate_per_s / 1e9
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last_ns = now_ns

    def take(self, now_ns: int) -> bool:
        """Whether one more message may pass at ``now_ns`` (it is counted if so)."""
        elapsed_ns = now_ns - self._last_ns
        if elapsed_ns > 0:  # a clock read earlier than the last one adds nothing
            self._tokens = min(self.burst, self._tokens + elapsed_ns * self.rate_per_ns)
            self._last_ns = now_ns
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def full(self, now_ns: int) -> bool:
        """Whether the bucket would be full at ``now_ns`` (it has not been drawn on lately)."""
        return self._tokens + max(0, now_ns - self._last_ns) * self.rate_per_ns >= self.burst


# After closing a flooder, how long to wait for its close frame. aiohttp
# otherwise reads (and parses) everything the flooder still sends for up to
# its 10 s close timeout: measured, that kept a closed flooder costing CPU.
FLOODER_CLOSE_WAIT_S = 0.1


async def close_flooder(ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, exc: RateLimited) -> None:
    """Close with 1008 and the reason, reading nothing more from the flooder, then drop the connection."""
    from server.connection import close_for

    if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
        transport.pause_reading()  # the close frame still goes out; the backlog is never parsed
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(close_for(ws, exc), FLOODER_CLOSE_WAIT_S)


@dataclass(frozen=True)
class RateLimit:
    """The per-connection message rate of one endpoint."""

    rate_per_s: float = RATE_PER_S
    burst: int = RATE_BURST

    def bucket(self, now_ns: int) -> TokenBucket:
        return TokenBucket(self.rate_per_s, self.burst, now_ns)

    def check(self, bucket: TokenBucket, now_ns: int) -> None:
        """Raise ``RateLimited`` when ``bucket`` is empty at ``now_ns``."""
        if not bucket.take(now_ns):
            raise RateLimited(self.rate_per_s, self.burst)


# ------------------------------------------------------- client address


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (``10.0.0.1``, ``10.0.0.0/8``, ``::1``); raises ValueError naming the bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"expected an IP address or network (10.0.0.1, 10.0.0.0/8), found {text!r}") from None
    return tuple(networks)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str, forwarded_for: Iterable[str], proxies: tuple[Network, ...]) -> str:
    """The client's address: ``peer``, unless it is a trusted proxy, then from ``X-Forwarded-For``.

    The header's entries are walked from the right (the hop nearest us)
    past every trusted proxy; the first other one is the client. A proxy
    appends what it saw, so entries left of it may be forged by the client
    and are never used past an untrusted one. A malformed entry stops the
    walk at the last trusted hop.
    """
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    address = peer
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return address
        if not _trusted(address, proxies):
            return address
    return address


def remote_address_middleware(proxies: tuple[Network, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that puts the client's address (behind trusted proxies) in ``request.remote``."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        peer = request.remote or ""
        address = client_address(peer, request.headers.getall("X-Forwarded-For", ()), proxies)
        if address != peer:
            request = request.clone(remote=address)
        return await handler(request)

    return middleware


# ------------------------------------------------------------- origin


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-case, as a browser's ``Origin`` header spells it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an origin like https://example.org, found {url!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def origin_refusal(origin: str | None, host: str | None, allowed: frozenset[str]) -> str | None:
    """Why a websocket from ``origin`` is refused, or None if it may connect.

    No ``Origin`` (a native or Python client) may connect; a browser's must be
    this server's own (same host, http or https) or one of ``allowed``.
    """
    if origin is None:
        return None
    normalized = origin.strip().lower()
    if normalized in allowed:
        return None
    if host and normalized in (f"http://{host.lower()}", f"https://{host.lower()}"):
        return None
    shown = origin.encode("ascii", "replace")[:200].decode("ascii")
    return (
        f"websocket from origin {shown!r} refused: it is not this server's own; "
        "if that site is yours, start the server with --allow-origin ORIGIN (or --public-url)"
    )


# ------------------------------------------------------ connection caps

# Phones behind one carrier-grade NAT share an address: thousands of them.
# bench.scale puts 1,000 on each loopback address. Above this from one
# address is a flood, not a crowd.
MAX_PER_ADDRESS = 5000
# File descriptors kept for everything that is not a websocket: the
# listening socket, SQLite, Redis, logs, HTTP requests for pages and tracks.
FD_RESERVE = 256
RETRY_AFTER_S = 10


class ConnectionRefused(Exception):
    """Too many connections; ``text`` says which limit and what to do."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# New websockets a second from one client address, and how many at once.
# A crowd behind one carrier-grade NAT joins in a storm (thousands within
# seconds), so the burst is large; what it stops is a client reconnecting in
# a loop, each fresh join costing a handshake, a group assignment and a
# stored row.
CONNECT_RATE_PER_S = 200.0
CONNECT_BURST = 2000
# IPv6 clients are counted by their /64: one subscriber gets a whole /64 and
# could otherwise take a fresh address for every connection.
IPV6_PREFIX = 64
# Idle buckets (full again) are dropped once this many addresses are held.
BUCKET_SWEEP_AT = 4096


def address_key(address: str) -> str:
    """The key per-address limits count under: an IPv4 address, an IPv6 /64, or the text as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class ConnectionLimits:
    """Counts open websockets per client address and in all, and new ones a second per address.

    Pure: ``now_ns`` (any monotonic clock) is passed in.
    """

    def __init__(
        self,
        max_per_address: int,
        max_total: int,
        connect_rate_per_s: float = CONNECT_RATE_PER_S,
        connect_burst: int = CONNECT_BURST,
    ) -> None:
        self.max_per_address = max_per_address
        self.max_total = max_total
        self.total = 0
        self._per_address: dict[str, int] = {}
        self._connect = RateLimit(connect_rate_per_s, connect_burst)
        self._buckets: dict[str, TokenBucket] = {}

    def acquire(self, address: str, now_ns: int) -> None:
        """Count one more connection from ``address``, or raise ``ConnectionRefused``."""
        key = address_key(address)
        if self.total >= self.max_total:
            raise ConnectionRefused(
                f"the server holds its maximum of {self.max_total} connections (--max-connections); try again later"
            )
        count = self._per_address.get(key, 0)
        if count >= self.max_per_address:
            raise ConnectionRefused(
                f"{count} connections from your address already, the maximum (--max-per-address {self.max_per_address}); "
                "try again later"
            )
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= BUCKET_SWEEP_AT:
                self._sweep(now_ns)
            bucket = self._buckets[key] = self._connect.bucket(now_ns)
        if not bucket.take(now_ns):
            raise ConnectionRefused(
                f"more than {self._connect.rate_per_s:g} new connections a second from your address "
                f"(burst {self._connect.burst}); try again later"
            )
        self._per_address[key] = count + 1
        self.total += 1

    def release(self, address: str) -> None:
        """One connection from ``address`` ended."""
        key = address_key(address)
        count = self._per_address.get(key, 0)
        if count <= 1:
            self._per_address.pop(key, None)
        else:
            self._per_address[key] = count - 1
        self.total = max(0, self.total - 1)

    def open_from(self, address: str) -> int:
        return self._per_address.get(address_key(address), 0)

    def _sweep(self, now_ns: int) -> None:
        """Forget the buckets that have refilled: they hold nothing a new one would not."""
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if not bucket.full(now_ns)}


def admit_websocket(request: web.Request, limits: ConnectionLimits, allowed_origins: frozenset[str]) -> str:
    """Admit a websocket upgrade or raise the HTTP refusal (403 origin, 503 too many).

    Returns the address it was counted under: the caller must ``limits.release`` it when the connection ends.
    """
    refusal = origin_refusal(request.headers.get("Origin"), request.host, allowed_origins)
    if refusal is not None:
        raise web.HTTPForbidden(text=refusal + "\n")
    address = request.remote or ""
    try:
        limits.acquire(address, time.monotonic_ns())
    except ConnectionRefused as exc:
        raise web.HTTPServiceUnavailable(text=exc.text + "\n", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    return address


@contextmanager
def websocket_admission(request: web.Request, limits: ConnectionLimits, allowed_origins: frozenset[str]) -> Iterator[None]:
    """``admit_websocket`` as a context: counted while open. (The participant handler calls the two halves
    itself: a generator-based context lives as long as the connection, ~0.3 KB a phone.)"""
    address = admit_websocket(request, limits, allowed_origins)
    try:
        yield
    finally:
        limits.release(address)


# ---------------------------------------------------------- headers

# What the pages load: their own modules and stylesheets, the QR image
# (/join.svg) and the empty data: favicon, tracks by fetch(), the service
# worker (/sw.js), websockets to this host. No inline script anywhere; the
# poster's one inline <style> is allowed by its hash (poster_style_hash).
# Permissions: the screen wake lock and autoplay are used; nothing else.
PERMISSIONS_POLICY = (
    "screen-wake-lock=(self), autoplay=(self), fullscreen=(self), camera=(), microphone=(), "
    "geolocation=(), payment=(), usb=(), midi=()"
)
# A Host header is put into connect-src only when it is a plain host[:port]:
# anything else could smuggle directives into the policy.
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def style_hash(css: str) -> str:
    """The CSP source for one inline ``<style>`` whose content is exactly ``css``."""
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(host: str | None, inline_styles: tuple[str, ...] = ()) -> str:
    """The policy for a response to a request for ``host``."""
    connect = "'self'"
    if host and _PLAIN_HOST.fullmatch(host):
        # 'self' covers same-host ws/wss in CSP3 browsers; older Safari needs them named.
        connect += f" ws://{host} wss://{host}"
    styles = " ".join(("'self'", *inline_styles))
    return (
        "default-src 'self'; script-src 'self'; "
        f"style-src {styles}; img-src 'self' data:; media-src 'self' blob:; "
        f"connect-src {connect}; worker-src 'self'; manifest-src 'self'; font-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(inline_styles: tuple[str, ...] = ()) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook that adds the security headers to every response."""

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if response.status == 101:
            # A websocket upgrade: no document, so none of these apply, and each
            # would stay in the response's headers for the connection's life
            # (~1.2 KB a phone, the policy string built per request included).
            return
        headers = response.headers
        headers.setdefault("Content-Security-Policy", content_security_policy(request.host, inline_styles))
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)

    return add_headers
