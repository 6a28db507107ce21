"""The aiohttp application: pages, tracks, the two websockets, the show's clock."""

from __future__ import annotations

import asyncio
import base64
import logging
import resource
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from clock.ntp import ServerIdentity
from server import api, poster
from server.auth import Gate
from server.connection import handler_args
from server.config import WEB_ROOT, ServerConfig
from server.hub import Hub, ShowSpec
from server.identity import SECRET_BYTES, DeviceIds
from server.metrics import LoopLagMonitor, Metrics
from server.organizer import organizer_ws
from server.participants import participant_ws
from server.prepare import segment_files
from server.security import FD_RESERVE, ConnectionLimits, RateLimit, remote_address_middleware, security_headers, style_hash
from server.store import SqliteStore, Store
from server.timebase import UpstreamPoller, start_responder

log = logging.getLogger("unisono.app")

HUB = web.AppKey("hub", Hub)
# The wrong-token slowdown, shared by the organizer websocket and the HTTP API.
GATE = web.AppKey("gate", Gate)
METRICS = web.AppKey("metrics", Metrics)
# Limits and access (server/security.py): device ids, websocket caps, origins, message rate.
DEVICE_IDS = web.AppKey("device_ids", DeviceIds)
LIMITS = web.AppKey("limits", ConnectionLimits)
ORIGINS = web.AppKey("origins", frozenset)
RATE = web.AppKey("rate", RateLimit)
# Request bodies: the API's JSON commands are a few hundred bytes (api.MAX_BODY_BYTES 4 KiB).
CLIENT_MAX_SIZE = 16 * 1024

# Track files never change under the same name (generated or prepared once),
# so phones may keep them; pages change with releases and are revalidated.
# The page's modules and the service worker too: a stale module next to a
# fresh page would break it, and the worker (clients/web/sw.js) serves them
# from its own cache when the network fails, not from the HTTP cache.
TRACK_CACHE_CONTROL = "public, max-age=3600"
PAGE_CACHE_CONTROL = "no-cache"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def load_or_create_token(config: ServerConfig) -> str:
    """The organizer token: from the config, else from the data dir, else new and saved."""
    if config.organizer_token is not None:
        return config.organizer_token
    path = config.token_path
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 16:
            return token
    token = secrets.token_urlsafe(24)
    _write_private(path, token)
    return token


def load_or_create_device_secret(config: ServerConfig, store: Store) -> bytes:
    """The key that signs device ids: the cluster's in Redis (first node sets it), else <data_dir>/device-secret."""
    candidate = secrets.token_bytes(SECRET_BYTES)
    shared = getattr(store, "shared_secret", None)
    if callable(shared):
        value = shared("device-secret", candidate)
        assert isinstance(value, bytes)
        return value
    path = config.device_secret_path
    if path.exists():
        try:
            secret = base64.urlsafe_b64decode(path.read_text(encoding="ascii").strip())
        except ValueError:
            secret = b""
        if len(secret) >= SECRET_BYTES:
            return secret
        log.warning("%s is not a usable secret: making a new one (devices get new ids and groups)", path)
    _write_private(path, base64.urlsafe_b64encode(candidate).decode("ascii"))
    return candidate


def max_connections(config: ServerConfig) -> int:
    """``config.max_connections``, or what the open-file limit leaves after a reserve."""
    if config.max_connections is not None:
        return config.max_connections
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, soft - FD_RESERVE)


def make_app(config: ServerConfig, show: ShowSpec, token: str | None = None, store: Store | None = None) -> web.Application:
    """The whole server as an aiohttp application, ready for ``web.AppRunner``.

    ``store``: where the show's state, assignments and event log are kept
    (default: the SQLite file in the data dir, ``config.state_path``).
    """
    proxies = config.proxy_networks
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE, middlewares=[remote_address_middleware(proxies)] if proxies else [],
        handler_args=handler_args(),  # idle and half-open connections are closed (server/connection.py)
    )
    redis_store = None
    if store is None and config.redis_url is not None:
        from server.cluster import RedisStore

        store = redis_store = RedisStore(config.redis_url)
    store = store if store is not None else SqliteStore(config.state_path)
    hub = Hub(config, show, token or load_or_create_token(config), store=store)
    app[HUB] = hub
    app[GATE] = Gate()
    app[DEVICE_IDS] = DeviceIds(load_or_create_device_secret(config, store))
    app[LIMITS] = ConnectionLimits(config.max_per_address, max_connections(config))
    app[ORIGINS] = config.allowed_origins
    app[RATE] = RateLimit(config.rate_per_s, config.rate_burst)
    loop_lag = LoopLagMonitor()
    hub.loop_lag_ms = loop_lag.p99_ms
    metrics = app[METRICS] = Metrics(
        # This node's own devices: Prometheus scrapes every node and adds them up (the console shows the cluster).
        fleet=lambda: hub.local_fleet(keep_bounds=True), show_state=lambda: hub.show.state, loop_lag=loop_lag
    )
    tracks = {path.name: path for path in show.tracks.values()}
    tracks.update(segment_files(show.tracks.values()))  # a prepared track's manifest names its segments

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "index.html", headers={"Cache-Control": PAGE_CACHE_CONTROL})

    async def track(request: web.Request) -> web.FileResponse:
        path = tracks.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such track")
        return web.FileResponse(path, headers={"Cache-Control": TRACK_CACHE_CONTROL})

    async def service_worker(request: web.Request) -> web.FileResponse:
        # At the root, so its scope is the whole site (no Service-Worker-Allowed needed).
        return web.FileResponse(WEB_ROOT / "sw.js", headers={"Cache-Control": PAGE_CACHE_CONTROL})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def run_hub(app: web.Application) -> AsyncIterator[None]:
        hub.log_event("server", "server_start", f"show {show.title!r}, {hub.show.state} (epoch {hub.show.snapshot.epoch})")
        tasks = [asyncio.create_task(hub.run()), asyncio.create_task(hub.pinger.run()), asyncio.create_task(loop_lag.run())]
        tasks.append(asyncio.create_task(hub.summarize_forever()))
        if config.gc_freeze:
            from server import gcpolicy

            tasks.append(asyncio.create_task(gcpolicy.manage(lambda: hub.show.state in ("scheduled", "playing"))))
        if redis_store is not None:
            from server.cluster import ClusterLink, node_name

            hub.cluster = ClusterLink(hub, redis_store, node_name(config.port))
            tasks.append(asyncio.create_task(hub.cluster.run()))
        yield
        if hub.cluster is not None:
            await hub.cluster.leave()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub.store.close()

    app.cleanup_ctx.append(run_hub)
    app.cleanup_ctx.append(_run_timebase)
    app.on_shutdown.append(_close_all)
    app.on_response_prepare.append(_revalidate_by_default)
    app.on_response_prepare.append(security_headers((style_hash(poster._POSTER_CSS),)))
    app.router.add_get("/", index)
    app.router.add_get("/ws", participant_ws)
    app.router.add_get("/ws/organizer", organizer_ws)
    app.router.add_get("/tracks/{name}", track)
    app.router.add_get("/sw.js", service_worker)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics.handler)
    api.add_routes(app)
    poster.add_routes(app)
    app.router.add_static("/", WEB_ROOT, append_version=False)
    return app


async def _run_timebase(app: web.Application) -> AsyncIterator[None]:
    """The NTP upstream poller and the SNTP responder, when configured; neither by default."""
    hub, metrics, config = app[HUB], app[METRICS], app[HUB].config
    task: asyncio.Task[None] | None = None
    address = config.ntp_upstream_address
    if address is not None:
        hub.upstream = UpstreamPoller(
            hub.clock,
            *address,
            poll_s=config.ntp_poll_s,
            # A step would move a scheduled start on every phone at once.
            may_step=lambda: hub.show.state not in ("scheduled", "playing"),
            on_offset=metrics.set_clock_offset,
        )
        task = asyncio.create_task(hub.upstream.run())
    try:
        if config.sntp_port is not None:
            upstream = hub.upstream
            local = ServerIdentity.local(hub.clock.now_ns(), config.sntp_local_stratum)
            hub.sntp = await start_responder(
                hub.clock, upstream.identity if upstream is not None else lambda: local, config.sntp_host, config.sntp_port
            )
            log.info("answering SNTP on udp %s:%d", *hub.sntp.address)
        yield
    finally:
        if hub.sntp is not None and hub.sntp.transport is not None:
            hub.sntp.transport.close()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _revalidate_by_default(request: web.Request, response: web.StreamResponse) -> None:
    """Static files (the page's modules, css) are revalidated: a release shows at the next load."""
    if response.status == 101:
        return  # a websocket upgrade caches nothing; the header would stay in its headers (~0.4 KB a phone)
    response.headers.setdefault("Cache-Control", PAGE_CACHE_CONTROL)


async def _close_all(app: web.Application) -> None:
    """On shutdown, tell every connection why it is being closed (1001)."""
    hub = app[HUB]
    sockets = [d.outbox.ws for d in hub.devices] + [o.ws for o in hub.organizers]
    await asyncio.gather(
        *(ws.close(code=1001, message=b"server shutting down") for ws in sockets), return_exceptions=True
    )

