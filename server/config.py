"""The server's configuration: one object, defaults and units, validated at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clock.estimator import EstimatorConfig
from clock.session import PollingConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
WEB_ROOT = REPO_ROOT / "clients" / "web"


class ConfigError(ValueError):
    """A configuration option is invalid; the text names the option."""


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
    # A start when fewer than this share of the connected devices are ready
    # (downloaded, audio unlocked, bound <= synced_bound_us) needs confirming.
    ready_share_min: float = 0.8
    # The URL participants open, as printed and put in the QR code (behind a
    # proxy or a public name); None: this server's own address.
    public_url: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: expected 0..65535, found {self.port}")
        if self.send_queue_limit < 4:
            raise ConfigError(f"send_queue_limit: expected at least 4, found {self.send_queue_limit}")
        if not self.overview_interval_s > 0:
            raise ConfigError(f"overview_interval_s: expected > 0, found {self.overview_interval_s}")
        if not 0 <= self.ready_share_min <= 1:
            raise ConfigError(f"ready_share_min: expected 0..1, found {self.ready_share_min}")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url: expected an http:// or https:// URL, found {self.public_url!r}")
        if self.organizer_token is not None and len(self.organizer_token) < 16:
            raise ConfigError("organizer_token: expected at least 16 characters")

    @property
    def token_path(self) -> Path:
        return self.data_dir / "organizer-token"

    @property
    def state_path(self) -> Path:
        """The SQLite file that keeps the show's state, assignments and event log."""
        return self.data_dir / "unisono.sqlite3"

