"""Limits and access, pure parts: the token bucket, client addresses, origins, caps, headers, the token gate."""

from __future__ import annotations

import asyncio
import hashlib
import base64
from pathlib import Path

import pytest

from server.auth import FIRST_DELAY_S, MAX_DELAY_S, Gate
from server.config import ConfigError, ServerConfig
from server.security import (
    ConnectionLimits,
    address_key,
    ConnectionRefused,
    RateLimit,
    RateLimited,
    TokenBucket,
    client_address,
    content_security_policy,
    origin_refusal,
    parse_networks,
    style_hash,
)

S = 1_000_000_000  # ns in a second


def test_a_bucket_passes_its_burst_then_refuses() -> None:
    """A full bucket lets `burst` messages through at one instant, then refuses the next."""
    bucket = TokenBucket(50.0, 100, now_ns=0)
    assert all(bucket.take(0) for _ in range(100))
    assert not bucket.take(0)


def test_a_bucket_refills_at_its_rate_and_caps_at_its_burst() -> None:
    """After 0.1 s at 50/s, 5 more pass; after an hour idle, still only the burst."""
    bucket = TokenBucket(50.0, 100, now_ns=0)
    for _ in range(100):
        bucket.take(0)
    assert [bucket.take(S // 10) for _ in range(6)] == [True] * 5 + [False]
    later = 3600 * S
    assert sum(bucket.take(later) for _ in range(200)) == 100


def test_a_steady_rate_under_the_limit_never_trips() -> None:
    """An honest device at 40 messages a second for a minute is never refused."""
    bucket = TokenBucket(50.0, 100, now_ns=0)
    assert all(bucket.take(i * S // 40) for i in range(40 * 60))


def test_a_flood_is_cut_to_the_rate() -> None:
    """A flood of 10,000 messages a second for 10 s gets burst + 10 s x 50/s through, no more."""
    bucket = TokenBucket(50.0, 100, now_ns=0)
    passed = sum(bucket.take(i * S // 10_000) for i in range(100_000))
    assert 100 + 500 - 1 <= passed <= 100 + 500


def test_a_clock_read_out_of_order_adds_no_tokens() -> None:
    """A timestamp earlier than the last one neither refills nor breaks the bucket."""
    bucket = TokenBucket(1.0, 1, now_ns=10 * S)
    assert bucket.take(10 * S)
    assert not bucket.take(5 * S)
    assert bucket.take(11 * S)


def test_rate_limit_raises_with_a_reason_and_policy_close() -> None:
    """An empty bucket raises RateLimited: close 1008, reason starting 'rate limit:'."""
    limit = RateLimit(rate_per_s=10, burst=2)
    bucket = limit.bucket(0)
    limit.check(bucket, 0)
    limit.check(bucket, 0)
    with pytest.raises(RateLimited) as caught:
        limit.check(bucket, 0)
    assert caught.value.close_code == 1008 and caught.value.code == "rate_limited"
    assert caught.value.close_reason.startswith("rate limit: more than 10 messages a second")


PROXIES = parse_networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    "peer, header, expected",
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not a proxy: its header is ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1"], "198.51.100.1"),  # the client wrote 1.2.3.4 itself
        ("10.0.0.2", ["198.51.100.1, 10.0.0.9"], "198.51.100.1"),  # two proxies
        ("10.0.0.2", ["198.51.100.1", "10.0.0.9"], "198.51.100.1"),  # two headers
        ("10.0.0.2", [], "10.0.0.2"),  # a proxy with no header: the proxy itself
        ("10.0.0.2", ["garbage"], "10.0.0.2"),
        ("10.0.0.2", ["198.51.100.1, garbage"], "10.0.0.2"),  # stop at the last trusted hop
        ("::1", ["2001:db8::1"], "2001:db8::1"),
        ("10.0.0.2", ["10.0.0.3, 10.0.0.4"], "10.0.0.3"),  # all trusted: the leftmost
    ],
)
def test_client_address_trusts_forwarded_for_only_from_proxies(peer: str, header: list[str], expected: str) -> None:
    """X-Forwarded-For is walked from the right past trusted proxies; from anyone else it is ignored."""
    assert client_address(peer, header, PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    """No --trusted-proxy: the header never counts."""
    assert client_address("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


def test_a_bad_proxy_address_is_an_error_naming_it() -> None:
    """A trusted proxy that is not an address or network is refused at start with its text."""
    with pytest.raises(ValueError, match="'proxy.example'"):
        parse_networks(["proxy.example"])
    with pytest.raises(ConfigError, match="trusted_proxies"):
        ServerConfig(trusted_proxies=("nope",))


@pytest.mark.parametrize(
    "origin, host, allowed, ok",
    [
        (None, "example.org", frozenset(), True),  # native and Python clients send no Origin
        ("http://127.0.0.1:8080", "127.0.0.1:8080", frozenset(), True),
        ("https://Show.Example:8443", "show.example:8443", frozenset(), True),
        ("https://evil.example", "show.example", frozenset(), False),
        ("http://127.0.0.1:9999", "127.0.0.1:8080", frozenset(), False),  # another port is another origin
        ("null", "show.example", frozenset(), False),
        ("https://partner.example", "show.example", frozenset({"https://partner.example"}), True),
    ],
)
def test_origin_must_be_the_servers_own_or_allowed(origin: str | None, host: str, allowed: frozenset[str], ok: bool) -> None:
    """A browser's Origin passes when it is this host's (http or https) or allowed; none passes too."""
    refusal = origin_refusal(origin, host, allowed)
    assert (refusal is None) == ok
    if refusal is not None:
        assert repr(origin) in refusal and "--allow-origin" in refusal


def test_allowed_origins_come_from_options_and_the_public_url() -> None:
    """--allow-origin and --public-url become lower-case origins; a non-URL is an option error."""
    config = ServerConfig(allow_origins=("https://A.example/path",), public_url="https://show.example:8443/join")
    assert config.allowed_origins == frozenset({"https://a.example", "https://show.example:8443"})
    with pytest.raises(ConfigError, match="allow_origins"):
        ServerConfig(allow_origins=("example.org",))


def test_connection_caps_per_address_and_in_all() -> None:
    """The N+1th connection from one address is refused, others still pass; the total cap refuses anyone."""
    limits = ConnectionLimits(max_per_address=2, max_total=3)
    limits.acquire("a", 0)
    limits.acquire("a", 0)
    with pytest.raises(ConnectionRefused, match="--max-per-address 2"):
        limits.acquire("a", 0)
    limits.acquire("b", 0)
    with pytest.raises(ConnectionRefused, match="--max-connections"):
        limits.acquire("c", 0)
    limits.release("a")
    limits.acquire("c", 0)
    assert (limits.open_from("a"), limits.open_from("c"), limits.total) == (1, 1, 3)
    for address in ("a", "b", "c"):
        limits.release(address)
    assert limits.total == 0 and limits.open_from("a") == 0


def test_new_connections_per_address_are_rate_limited() -> None:
    """A burst passes at once, then new connections from that address pass at the rate; others are not held back."""
    limits = ConnectionLimits(max_per_address=10_000, max_total=10_000, connect_rate_per_s=10, connect_burst=50)
    for _ in range(50):
        limits.acquire("10.0.0.1", 0)
        limits.release("10.0.0.1")  # a client reconnecting in a loop: few open, many new
    with pytest.raises(ConnectionRefused, match="new connections a second"):
        limits.acquire("10.0.0.1", 0)
    limits.acquire("10.0.0.2", 0)  # another address has its own bucket
    limits.acquire("10.0.0.1", 100_000_000)  # 0.1 s later: one more at 10/s
    with pytest.raises(ConnectionRefused):
        limits.acquire("10.0.0.1", 100_000_000)
    # A refused attempt is not counted as open.
    assert limits.open_from("10.0.0.1") == 1 and limits.total == 2


def test_ipv6_clients_are_counted_by_their_slash_64() -> None:
    """Fresh addresses from one /64 share a cap; an IPv4-mapped address counts as the IPv4 one."""
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("not an address") == "not an address"
    limits = ConnectionLimits(max_per_address=2, max_total=100)
    limits.acquire("2001:db8::1", 0)
    limits.acquire("2001:db8::2", 0)
    with pytest.raises(ConnectionRefused, match="--max-per-address 2"):
        limits.acquire("2001:db8::3", 0)
    limits.acquire("2001:db8:0:1::3", 0)


def test_idle_connect_buckets_are_forgotten() -> None:
    """Addresses seen once do not pile up: refilled buckets are swept once many are held."""
    from server.security import BUCKET_SWEEP_AT

    limits = ConnectionLimits(max_per_address=10, max_total=10**6, connect_rate_per_s=100, connect_burst=10)
    for i in range(BUCKET_SWEEP_AT):
        limits.acquire(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0)
        limits.release(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    limits.acquire("192.0.2.1", 1_000_000_000)  # 1 s later every earlier bucket is full again
    assert len(limits._buckets) == 1


def test_the_policy_has_no_inline_script_and_names_the_host_for_websockets() -> None:
    """script-src is 'self' only; connect-src names ws/wss of a plain host, nothing for a smuggled one."""
    policy = content_security_policy("show.example:8443")
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["connect-src"] == "'self' ws://show.example:8443 wss://show.example:8443"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    smuggled = content_security_policy("x; script-src *")
    assert "script-src *" not in smuggled and dict(d.strip().split(" ", 1) for d in smuggled.split(";"))["connect-src"] == "'self'"


def test_style_hash_is_the_csp_sha256_of_the_text() -> None:
    """An inline style is allowed by its exact SHA-256, base64, quoted."""
    digest = base64.b64encode(hashlib.sha256(b"p{}").digest()).decode()
    assert style_hash("p{}") == f"'sha256-{digest}'"


def test_tls_options_come_in_pairs() -> None:
    """A certificate without its key (or the reverse) is an option error."""
    with pytest.raises(ConfigError, match="both"):
        ServerConfig(tls_cert=Path("cert.pem"))
    with pytest.raises(ConfigError, match="both"):
        ServerConfig(tls_key=Path("key.pem"))


async def test_twenty_wrong_guesses_from_one_address_take_the_doubling_delays() -> None:
    """In simulated time, 20 wrong tokens from one address wait 0.25, 0.5, 1, 2, 4, then 5 s each: 82.75 s."""
    clock = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    gate = Gate(now_s=lambda: clock[0], sleep=sleep)
    results = [await gate.admit("198.51.100.1", f"guess-{i}", "the-real-token-0123456789") for i in range(20)]
    assert not any(results)
    expected = [min(MAX_DELAY_S, FIRST_DELAY_S * 2**i) for i in range(20)]
    assert waits == expected
    assert clock[0] == pytest.approx(82.75)
    # Another address is not slowed by the first one's failures; the right token passes at once.
    assert await gate.admit("198.51.100.2", "the-real-token-0123456789", "the-real-token-0123456789")
    assert len(waits) == 20


async def test_parallel_guesses_from_one_address_queue_behind_each_other() -> None:
    """Ten guesses at once from one address still wait one after another (the sum of the delays)."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await asyncio.sleep(0)

    gate = Gate(now_s=lambda: clock[0], sleep=sleep)
    await asyncio.gather(*(gate.admit("198.51.100.1", "wrong", "the-real-token-0123456789") for _ in range(10)))
    assert clock[0] == pytest.approx(sum(min(MAX_DELAY_S, FIRST_DELAY_S * 2**i) for i in range(10)))
