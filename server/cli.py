"""The ``unisono`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

from aiohttp import web

from server.app import HUB, load_or_create_token, make_app, track_duration_ns
from server.config import ConfigError, ServerConfig
from server.hub import ShowSpec


def demo_show(data_dir: Path) -> ShowSpec:
    """The built-in demo show: two groups, generated tracks with clicks on a beat."""
    from server.demo import DEMO_TITLE, ensure_demo_tracks

    tracks = ensure_demo_tracks(data_dir / "demo")
    duration = max(track_duration_ns(p) for p in tracks.values())
    return ShowSpec(title=DEMO_TITLE, tracks=dict(tracks), duration_ns=duration)


def lan_address() -> str:
    """This machine's address on its default route, for URLs phones can open."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent by a UDP connect
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


async def serve(config: ServerConfig, show: ShowSpec, ready: asyncio.Event | None = None) -> None:
    """Run the server until cancelled; prints the participant and organizer URLs."""
    app = make_app(config, show, load_or_create_token(config))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port
    host = lan_address() if config.host in ("0.0.0.0", "::", "") else config.host
    token = app[HUB].token
    print(f"Unisono is serving {show.title!r} ({len(show.tracks)} groups)", flush=True)
    print(f"  participants: http://{host}:{port}/", flush=True)
    print(f"  organizer:    http://{host}:{port}/organizer.html?token={token}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unisono", description="Synchronized audio for a crowd of phones.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server with the demo show")
    p_serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p_serve.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    p_serve.add_argument("--data-dir", type=Path, default=Path("var"), help="state and generated files (default: ./var)")
    p_serve.add_argument("-v", "--verbose", action="store_true", help="log every join and sample rejection")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = ServerConfig(host=args.host, port=args.port, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"unisono: invalid option: {exc}", file=sys.stderr)
        return 2
    show = demo_show(config.data_dir)
    try:
        asyncio.run(serve(config, show))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"unisono: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
