"""The ``unisono`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import resource
import socket
import ssl
import sys
from pathlib import Path

from aiohttp import web

from server.app import HUB, load_or_create_token, make_app
from server.config import ConfigError, ServerConfig
from server.hub import ShowSpec
from server.logs import FORMATS, configure_logging
from server.store import StoreError
from server.showfile import ShowFile, ShowFileInvalid, load_show

DEMO_SHOW_PATH = Path(__file__).with_name("demo_show.toml")
# Connections the kernel holds for accept (capped by net.core.somaxconn). At
# aiohttp's default of 128, a join storm of 1,500 connects a second overflowed
# it during every loop stall of a few hundred ms (nstat ListenOverflows), and
# each dropped connect waited 1, 3, 7 s for its SYN retry: welcome p99 11 s.
LISTEN_BACKLOG = 4096


def demo_show_file(data_dir: Path) -> ShowFile:
    """The built-in demo show (server/demo_show.toml), its tracks generated into <data_dir>/demo."""
    from server.demo import ensure_demo_tracks

    track_dir = data_dir / "demo"
    ensure_demo_tracks(track_dir)
    return load_show(DEMO_SHOW_PATH, track_dir=track_dir)


def demo_show(data_dir: Path) -> ShowSpec:
    """The built-in demo show: two groups, generated tracks with clicks on a beat, and cues."""
    return ShowSpec.from_file(demo_show_file(data_dir))


def _clock(ns: int) -> str:
    total = round(ns / 1e9)
    return f"{total // 60}:{total % 60:02d}"


def summary(show: ShowFile) -> str:
    """What `unisono check` prints for a good show: title, and per group its weight, length and cues."""
    lines = [f"{show.path}: ok: {show.title!r}, {len(show.groups)} group{'s' if len(show.groups) != 1 else ''}"]
    for group in show.groups:
        lines.append(
            f"  {group.name}: {group.track.name}, {_clock(group.duration_ns)}, weight {group.weight:g}, "
            f"{len(group.cues)} cue{'s' if len(group.cues) != 1 else ''}"
        )
    return "\n".join(lines)


def load_or_report(path: Path, track_dir: Path | None = None) -> ShowFile | None:
    """The checked show file, or None after printing why it cannot be used (every error, then a count)."""
    try:
        return load_show(path, track_dir=track_dir)
    except OSError as exc:
        print(f"{path}: cannot read the show file: {exc.strerror or exc}", file=sys.stderr)
    except ShowFileInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        count = len(exc.errors)
        print(f"{path}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
    return None


def check(path: Path, track_dir: Path | None = None) -> int:
    """`unisono check SHOW.toml`: 0 and a summary if the show is fine, 1 and every error if not."""
    show = load_or_report(path, track_dir)
    if show is None:
        return 1
    print(summary(show))
    return 0


def prepared(show: ShowFile, data_dir: Path) -> ShowFile:
    """The show with each group's track replaced by its segment manifest, preparing what is missing.

    Segments are cached in ``<data_dir>/prepared`` and remade only when a
    source is newer than its manifest; phones then download compressed 20 s
    segments instead of whole files (PROTOCOL.md section 8).
    """
    from server.prepare import prepare_tracks

    sources = [group.track for group in show.groups if group.track.suffix != ".json"]
    manifests = prepare_tracks(sources, data_dir / "prepared")
    groups = tuple(
        dataclasses.replace(group, track=manifests.get(group.track, group.track)) for group in show.groups
    )
    return dataclasses.replace(show, groups=groups)


def prepare(path: Path, data_dir: Path) -> int:
    """`unisono prepare SHOW.toml`: cut every track of the show into segments now, so serve starts at once."""
    show = load_or_report(path)
    if show is None:
        return 1
    ready = prepared(show, data_dir)
    for before, after in zip(show.groups, ready.groups):
        print(f"  {before.name}: {before.track} -> {after.track}")
    return 0


def lan_address() -> str:
    """This machine's address on its default route, for URLs phones can open."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent by a UDP connect
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context from ``tls_cert`` and ``tls_key``, None without them; ConfigError if unusable."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except ssl.SSLError as exc:  # before OSError, its base class
        raise ConfigError(f"tls_cert, tls_key: not a PEM certificate chain and its matching key ({exc.reason or exc})") from None
    except OSError as exc:
        raise ConfigError(f"tls_cert, tls_key: cannot read {exc.filename or config.tls_cert}: {exc.strerror or exc}") from None
    return context


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (each phone holds a socket); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


async def serve(config: ServerConfig, show: ShowSpec, ready: asyncio.Event | None = None) -> None:
    """Run the server until cancelled; prints the participant and organizer URLs.

    Raises ConfigError when the TLS certificate or key cannot be used.
    """
    context = tls_context(config)
    scheme = "https" if context is not None else "http"
    app = make_app(config, show, load_or_create_token(config))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=LISTEN_BACKLOG, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port
    host = lan_address() if config.host in ("0.0.0.0", "::", "") else config.host
    hub = app[HUB]
    if not hub.join_url:
        hub.join_url = f"{scheme}://{host}:{port}/"
    print(f"Unisono is serving {show.title!r} ({len(show.tracks)} groups)", flush=True)
    print(f"  participants: {hub.join_url}", flush=True)
    print(f"  organizer:    {scheme}://{host}:{port}/organizer.html?token={hub.token}", flush=True)
    if hub.sntp is not None:
        sntp_host, sntp_port = hub.sntp.address
        print(f"  SNTP:         udp {host if sntp_host in ('0.0.0.0', '::') else sntp_host}:{sntp_port}", flush=True)
    if hub.upstream is not None:
        print(f"  NTP upstream: {hub.upstream.name}, polled every {config.ntp_poll_s:g} s", flush=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unisono", description="Synchronized audio for a crowd of phones.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server with a show file (default: the demo show)")
    p_serve.add_argument("show", nargs="?", type=Path, help="the show file (TOML); without it, the demo show")
    p_serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p_serve.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    p_serve.add_argument("--data-dir", type=Path, default=Path("var"), help="state and generated files (default: ./var)")
    p_serve.add_argument("-v", "--verbose", action="store_true", help="log every join and sample rejection")
    p_serve.add_argument("--log-format", choices=FORMATS, default="text", help="log lines as text or one JSON object a line (default: text)")
    p_serve.add_argument("--redis", default=None, metavar="URL", help="run as a node of a cluster sharing the show through Redis (redis://HOST:PORT/DB); default: this server alone, state in SQLite")
    p_serve.add_argument("--public-url", default=None, help="the URL participants open, if not this server's address (behind a proxy): printed and in the QR code")
    p_serve.add_argument("--ntp-upstream", metavar="HOST[:PORT]", default=None, help="NTP server the server clock follows (port 123 by default); the system clock is not touched (default: none, the clock keeps its own time)")
    p_serve.add_argument("--ntp-poll", metavar="S", type=float, default=64.0, help="seconds between upstream polls after the first burst (default: 64)")
    p_serve.add_argument("--sntp-port", metavar="PORT", type=int, default=None, help="answer SNTP on this UDP port, for native clients and other nodes (default: off; 123 needs privileges)")
    p_serve.add_argument("--sntp-host", metavar="ADDR", default="0.0.0.0", help="address to answer SNTP on (default: all)")
    p_serve.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop: asyncio's own or uvloop (Linux and macOS; default: asyncio)")
    p_serve.add_argument("--tls-cert", metavar="FILE", type=Path, default=None, help="serve HTTPS and WSS with this PEM certificate chain (with --tls-key); phones need HTTPS for offline use and wake lock. Or terminate TLS in a reverse proxy: deploy/nginx-tls.conf")
    p_serve.add_argument("--tls-key", metavar="FILE", type=Path, default=None, help="the PEM private key of --tls-cert")
    p_serve.add_argument("--allow-origin", metavar="ORIGIN", action="append", default=[], help="also accept websockets from pages of this origin (https://example.org); repeatable. This server's own origin and --public-url's are always accepted")
    p_serve.add_argument("--trusted-proxy", metavar="ADDR", action="append", default=[], help="a reverse proxy (address or network) whose X-Forwarded-For names the client, for per-address limits and the wrong-token delay; repeatable. Without it, behind a proxy every phone counts as the proxy's address")
    p_serve.add_argument("--max-per-address", metavar="N", type=int, default=5000, help="websockets from one client address at most (default: 5000; phones behind a carrier NAT share one address)")
    p_serve.add_argument("--max-connections", metavar="N", type=int, default=None, help="websockets in all at most (default: the open-file limit minus 256)")
    p_serve.add_argument("--ready-share", type=float, default=0.8, help="a start with fewer ready devices than this share asks for confirmation (default: 0.8)")
    p_check = sub.add_parser("check", help="validate a show file and list every error")
    p_check.add_argument("show", type=Path, help="the show file (TOML)")
    p_check.add_argument("--tracks", type=Path, default=None, help="folder the tracks are in (default: the show file's)")
    p_prepare = sub.add_parser("prepare", help="cut a show's tracks into segments phones can stream (serve does it too)")
    p_prepare.add_argument("show", type=Path, help="the show file (TOML)")
    p_prepare.add_argument("--data-dir", type=Path, default=Path("var"), help="where segments are kept (default: ./var)")
    from server.commands import add_commands, run_command

    add_commands(sub)
    args = parser.parse_args(argv)
    rc = run_command(args)
    if rc is not None:
        return rc
    if args.command == "check":
        return check(args.show, args.tracks)
    if args.command == "prepare":
        return prepare(args.show, args.data_dir)

    configure_logging(args.log_format, logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = ServerConfig(
            host=args.host, port=args.port, data_dir=args.data_dir, public_url=args.public_url, redis_url=args.redis, gc_freeze=True, ready_share_min=args.ready_share,
            ntp_upstream=args.ntp_upstream, ntp_poll_s=args.ntp_poll, sntp_port=args.sntp_port, sntp_host=args.sntp_host,
            tls_cert=args.tls_cert, tls_key=args.tls_key, allow_origins=tuple(args.allow_origin),
            trusted_proxies=tuple(args.trusted_proxy), max_per_address=args.max_per_address, max_connections=args.max_connections,
        )
        tls_context(config)  # an unreadable certificate is an option error, before any work
    except ConfigError as exc:
        print(f"unisono: invalid option: {exc}", file=sys.stderr)
        return 2
    if args.show is None:
        show_file = demo_show_file(config.data_dir)
    else:
        loaded = load_or_report(args.show)
        if loaded is None:
            print("unisono: not serving: fix the show file", file=sys.stderr)
            return 1
        show_file = loaded
    try:
        show = ShowSpec.from_file(prepared(show_file, config.data_dir))
    except OSError as exc:  # the data dir is not writable (read-only, full, not a directory)
        print(f"unisono: cannot write to the data dir {config.data_dir}: {exc.strerror or exc} ({exc.filename})", file=sys.stderr)
        return 1
    raise_open_file_limit()
    run = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("unisono: --loop uvloop: uvloop is not installed (pip install uvloop)", file=sys.stderr)
            return 2
        run = uvloop.run
    try:
        run(serve(config, show))
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        print(f"unisono: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unisono: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
