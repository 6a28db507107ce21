"""The server's configuration: one object, defaults and units, validated at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from clock.estimator import EstimatorConfig
from clock.session import PollingConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
WEB_ROOT = REPO_ROOT / "clients" / "web"


class ConfigError(ValueError):
    """A configuration option is invalid; the text names the option."""


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """("host", port) from "host", "host:port", "[IPv6]" or "[IPv6]:port"; raises ValueError saying what was expected."""
    expected = f"expected HOST or HOST:PORT with a port in 1..65535, found {text!r}"
    host, colon, port_text = text, "", ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(expected)
        colon, port_text = rest[:1], rest[1:]
    elif text.count(":") == 1:
        host, colon, port_text = text.partition(":")
    if colon and not port_text.isdigit():
        raise ValueError(expected)
    port = int(port_text) if colon else default_port
    if not host or not 1 <= port <= 65535:
        raise ValueError(expected)
    return host, port


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``unisono serve`` can be told. Units in the names."""

    host: str = "0.0.0.0"
    port: int = 8080
    # Where the organizer token, the generated demo tracks and (later) the
    # show's state live.
    data_dir: Path = Path("var")
    # Outgoing messages buffered per participant before it counts as too slow
    # and is closed: a schedule plus a few seconds of pings and estimates.
    send_queue_limit: int = 64
    # How often organizers get an overview even when nothing changed.
    overview_interval_s: float = 1.0
    # A bound at or under this counts as "synced" in the overview.
    synced_bound_us: int = 10_000
    polling: PollingConfig = field(default_factory=PollingConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    # Fixed organizer token (tests); None: read or create <data_dir>/organizer-token.
    organizer_token: str | None = None
    # Clock exchanges per second all devices share (clock/budget.py), and how
    # many may go at once. About 200 us of server CPU each.
    ping_budget_per_s: float = 1500.0
    ping_burst: int = 600
    # Manage the garbage collector for a long-running process with many
    # phones (server/gcpolicy.py); process-wide, so `unisono serve` turns it on.
    gc_freeze: bool = False
    # A start when fewer than this share of the connected devices are ready
    # (downloaded, audio unlocked, bound <= synced_bound_us) needs confirming.
    ready_share_min: float = 0.8
    # The URL participants open, as printed and put in the QR code (behind a
    # proxy or a public name); None: this server's own address.
    public_url: str | None = None
    # The NTP server the server clock follows, "host" or "host:port" (port
    # 123 by default); None: the clock keeps its own time (wall time at start).
    # A Redis URL (redis://HOST:PORT/DB) makes this server a node of a cluster
    # sharing the show through Redis (server/cluster.py); None: embedded SQLite.
    redis_url: str | None = None
    ntp_upstream: str | None = None
    # Seconds between upstream polls after the first burst (NTP's default is 64 s).
    ntp_poll_s: float = 64.0
    # UDP port on which to answer SNTP (0: any free port); None: no SNTP.
    sntp_port: int | None = None
    sntp_host: str = "0.0.0.0"
    # The stratum SNTP answers give with no upstream (ntpd's local clock: 8).
    sntp_local_stratum: int = 8
    # Limits and access (server/security.py, PROTOCOL.md "Limits").
    # Websockets from one client address at most: generous, since thousands of
    # phones on 4G share one carrier-grade NAT address.
    max_per_address: int = 5000
    # Websockets in all; None: the open-file limit minus a reserve (security.FD_RESERVE).
    max_connections: int | None = None
    # Messages a second (and at once) one connection may send; above: closed 1008.
    rate_per_s: float = 50.0
    rate_burst: int = 100
    # Browser origins, besides this server's own and public_url's, whose pages
    # may open the websockets ("https://example.org").
    allow_origins: tuple[str, ...] = ()
    # Proxies (addresses or networks) whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    # Serve HTTPS and WSS with this certificate chain and key (PEM), both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: expected 0..65535, found {self.port}")
        if self.send_queue_limit < 4:
            raise ConfigError(f"send_queue_limit: expected at least 4, found {self.send_queue_limit}")
        if not self.overview_interval_s > 0:
            raise ConfigError(f"overview_interval_s: expected > 0, found {self.overview_interval_s}")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis_url: expected redis://HOST:PORT/DB, found {self.redis_url!r}")
        if not self.ping_budget_per_s > 0 or self.ping_burst < 1:
            raise ConfigError(f"ping budget: expected > 0 per second and a burst >= 1, found {self.ping_budget_per_s}, {self.ping_burst}")
        if not 0 <= self.ready_share_min <= 1:
            raise ConfigError(f"ready_share_min: expected 0..1, found {self.ready_share_min}")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url: expected an http:// or https:// URL, found {self.public_url!r}")
        if self.organizer_token is not None and len(self.organizer_token) < 16:
            raise ConfigError("organizer_token: expected at least 16 characters")
        if self.ntp_upstream is not None:
            self.ntp_upstream_address  # raises ConfigError naming the option
        if not self.ntp_poll_s > 0:
            raise ConfigError(f"ntp_poll_s: expected > 0, found {self.ntp_poll_s}")
        if self.sntp_port is not None and not 0 <= self.sntp_port <= 65535:
            raise ConfigError(f"sntp_port: expected 0..65535, found {self.sntp_port}")
        if not 1 <= self.sntp_local_stratum <= 15:
            raise ConfigError(f"sntp_local_stratum: expected 1..15, found {self.sntp_local_stratum}")
        if self.max_per_address < 1:
            raise ConfigError(f"max_per_address: expected at least 1, found {self.max_per_address}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError(f"max_connections: expected at least 1, found {self.max_connections}")
        if not self.rate_per_s > 0 or self.rate_burst < 1:
            raise ConfigError(f"rate limit: expected > 0 messages a second and a burst >= 1, found {self.rate_per_s}, {self.rate_burst}")
        self.allowed_origins  # raises ConfigError naming the option
        self.proxy_networks  # likewise
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert, tls_key: give both the certificate and its key, or neither")

    @property
    def ntp_upstream_address(self) -> tuple[str, int] | None:
        """(host, port) of ``ntp_upstream``, or None without one."""
        if self.ntp_upstream is None:
            return None
        try:
            return parse_host_port(self.ntp_upstream, default_port=123)
        except ValueError as exc:
            raise ConfigError(f"ntp_upstream: {exc}") from None

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Origins allowed to open websockets besides the request's own: allow_origins and public_url's."""
        from server.security import origin_of

        origins = set()
        for name, urls in (("allow_origins", self.allow_origins), ("public_url", (self.public_url,) if self.public_url else ())):
            for url in urls:
                try:
                    origins.add(origin_of(url))
                except ValueError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
        return frozenset(origins)

    @property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        from server.security import parse_networks

        try:
            return parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None

    @property
    def device_secret_path(self) -> Path:
        """The key that signs device ids (server/identity.py), unless Redis holds the cluster's."""
        return self.data_dir / "device-secret"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "organizer-token"

    @property
    def state_path(self) -> Path:
        """The SQLite file that keeps the show's state, assignments and event log."""
        return self.data_dir / "unisono.sqlite3"

