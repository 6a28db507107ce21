"""Many server nodes, one show: state and assignments in Redis, commands and schedules over pub/sub.

``unisono serve --redis redis://HOST:PORT/DB`` makes a node of a cluster:

- ``RedisStore`` keeps what every node shares: the show's state (written with
  a compare-and-set on the epoch, so two nodes never both win the same
  transition), device-to-group assignments (balanced over the whole cluster
  by one Lua script), the latest announcement and the event log.
- ``ClusterLink`` runs on each node's event loop: it publishes every show
  change and announcement the node makes, applies the others' (and re-reads
  the stored state every second, so a lost message costs at most a second),
  and shares the node's device summary so any console shows the whole cluster.

Phones talk to one node at a time (through a load balancer); when their node
dies they reconnect to another, which finds their group and the show in Redis.
The stored calls are synchronous redis-py calls on loopback or a LAN (a join
costs one script call, about 0.1 ms); pub/sub listens with redis.asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from server.fleet import Fleet
from server.groups import AssignmentStore
from server.show import ShowSnapshot
from server.store import Event, StoredShow, StoreError, store_errors

if TYPE_CHECKING:
    from server.hub import Hub

log = logging.getLogger("unisono.cluster")

# Events the Redis log keeps (the SQLite one keeps all).
MAX_EVENTS = 10_000
# A node's summary older than this is a dead node's: left out of the cluster view.
NODE_STALE_S = 5.0
SUMMARY_INTERVAL_S = 1.0

# Assign a device to a group: its stored one if still in the show, else the
# group with the fewest devices for its weight (count_a * weight_b < count_b *
# weight_a, exact), ties broken by ARGV[2] in [0, 1). Atomic: two nodes never
# read the same counts.
_ASSIGN = """
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known then
  for i = 3, #ARGV, 2 do
    if ARGV[i] == known then return known end
  end
end
local best = {}
local best_count, best_weight = nil, nil
for i = 3, #ARGV, 2 do
  local name = ARGV[i]
  local weight = tonumber(ARGV[i + 1])
  local count = tonumber(redis.call('HGET', KEYS[2], name) or '0')
  if best_count == nil or count * best_weight < best_count * weight then
    best = {name}
    best_count, best_weight = count, weight
  elseif count * best_weight == best_count * weight then
    table.insert(best, name)
  end
end
local pick = best[math.floor(tonumber(ARGV[2]) * #best) + 1]
redis.call('HSET', KEYS[1], ARGV[1], pick)
redis.call('HINCRBY', KEYS[2], pick, 1)
return pick
"""

# Give a device back the group this node knows for it after Redis lost it
# (a restart without persistence): set only if absent, and counted then.
_RESTORE_ASSIGN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
return 0
"""

# A call to Redis that fails is retried this often, briefly: a command made
# while Redis is down must be refused within a moment, not after redis-py's
# default backoff of seconds.
REDIS_RETRIES = 2
REDIS_BACKOFF = ExponentialBackoff(cap=0.05, base=0.01)

# Store the show's state only if its epoch is newer than the stored one.
_SAVE_SHOW = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '-1')
if tonumber(ARGV[1]) <= stored then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'state', ARGV[2], 'start_ns', ARGV[3], 'show_key', ARGV[4])
return 1
"""


def _text(value: bytes | str) -> str:
    """A value as redis-py returns it (bytes, since responses are not decoded), as text."""
    return value.decode() if isinstance(value, bytes) else value


def _event_line(event: Event) -> str:
    """An event as the Redis list keeps it: one JSON object (``recent_events`` reads it back)."""
    return json.dumps({"at_us": event.at_us, "who": event.who, "action": event.action, "detail": event.detail})


def _redis(url: str, action: str) -> contextlib.AbstractContextManager[None]:
    """Turn redis-py's errors while doing ``action`` into a StoreError naming Redis and the cause."""
    return store_errors(f"Redis at {url}", action, (redis.RedisError,))


def node_name(port: int) -> str:
    """This node's name in the cluster: host, port and process."""
    return f"{socket.gethostname()}:{port}:{os.getpid()}"


class RedisGroupAssigner:
    """``GroupAssigner``'s interface over Redis: balanced over every node's devices."""

    def __init__(self, store: RedisStore, groups: tuple[str, ...], weights: Mapping[str, float]) -> None:
        self.store = store
        self.groups = groups
        self.weights = {g: float(weights.get(g, 1.0)) for g in groups}
        self._rng = random.Random()
        self._args = [value for g in groups for value in (g, repr(self.weights[g]))]

    def assign(self, device_id: str) -> str:
        with _redis(self.store.url, "assign a group"):
            group = self.store.assign_script(
                keys=[self.store.key("assign"), self.store.key("group_counts")],
                args=[device_id, repr(self._rng.random()), *self._args],
            )
        return _text(group)

    def counts(self) -> dict[str, int]:
        with _redis(self.store.url, "read the group counts"):
            stored = self.store.db.hgetall(self.store.key("group_counts"))
        counts = {_text(k): int(v) for k, v in stored.items()}
        return {g: counts.get(g, 0) for g in self.groups}

    def __len__(self) -> int:
        return sum(self.counts().values())


class _RedisAssignments:
    """The AssignmentStore view of the same hash (device id -> group)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def get(self, device_id: str) -> str | None:
        with _redis(self.store.url, "read a group assignment"):
            value = self.store.db.hget(self.store.key("assign"), device_id)
        return None if value is None else _text(value)

    def put(self, device_id: str, group: str) -> None:
        with _redis(self.store.url, "store a group assignment"):
            self.store.db.hset(self.store.key("assign"), device_id, group)

    def items(self) -> Iterator[tuple[str, str]]:
        for device, group in self.store.db.hscan_iter(self.store.key("assign")):
            yield _text(device), _text(group)


class RedisStore:
    """The cluster's shared state, under keys ``<prefix>...`` of one Redis database."""

    def __init__(self, url: str, prefix: str = "unisono:") -> None:
        self.url = url
        self.prefix = prefix
        self.db = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, retry=Retry(REDIS_BACKOFF, REDIS_RETRIES)
        )
        # The secrets this node set or read (shared_secret), written back after Redis lost them.
        self.secrets: dict[str, bytes] = {}
        try:
            self.db.ping()
        except redis.RedisError as exc:
            raise StoreError(f"cannot reach Redis at {url}: {exc}; start redis-server or check --redis") from exc
        self.assign_script = self.db.register_script(_ASSIGN)
        self._save_show = self.db.register_script(_SAVE_SHOW)
        self.restore_assign = self.db.register_script(_RESTORE_ASSIGN)
        self.assignments: AssignmentStore = _RedisAssignments(self)

    def key(self, name: str) -> str:
        return self.prefix + name

    def shared_secret(self, name: str, candidate: bytes) -> bytes:
        """The cluster's secret ``name``: ``candidate`` if no node has set one yet (SET NX), else the stored one."""
        with _redis(self.url, f"read the shared {name}"):
            self.db.set(self.key(name), candidate, nx=True)
            value = self.db.get(self.key(name))
        secret = value if isinstance(value, bytes) else candidate  # bytes: responses are not decoded
        self.secrets[name] = secret
        return secret

    def make_assigner(self, groups: tuple[str, ...], weights: Mapping[str, float]) -> RedisGroupAssigner:
        return RedisGroupAssigner(self, groups, weights)

    def load_show(self) -> StoredShow | None:
        with _redis(self.url, "read the show's state"):
            stored = self.db.hgetall(self.key("show"))
        if not stored:
            return None
        fields = {_text(k): _text(v) for k, v in stored.items()}
        start = fields.get("start_ns", "")
        snapshot = ShowSnapshot(
            epoch=int(fields["epoch"]), state=fields["state"], start_ns=int(start) if start else None  # type: ignore[arg-type]
        )
        return StoredShow(snapshot, fields.get("show_key", ""))

    def save_show(self, stored: StoredShow) -> bool:
        snap = stored.snapshot
        start = "" if snap.start_ns is None else str(snap.start_ns)
        with _redis(self.url, "store the show's state"):
            return bool(self._save_show(keys=[self.key("show")], args=[snap.epoch, snap.state, start, stored.show_key]))

    def save_announcement(self, text: str, at_us: int) -> None:
        with _redis(self.url, "store the announcement"):
            self.db.hset(self.key("announcement"), mapping={"text": text, "at_us": at_us})

    def load_announcement(self) -> tuple[str, int] | None:
        with _redis(self.url, "read the announcement"):
            stored = self.db.hgetall(self.key("announcement"))
        if not stored:
            return None
        return _text(stored[b"text"]), int(stored[b"at_us"])

    def log_event(self, event: Event) -> None:
        with _redis(self.url, "store an event"):
            pipe = self.db.pipeline()
            pipe.rpush(self.key("events"), _event_line(event))
            pipe.ltrim(self.key("events"), -MAX_EVENTS, -1)
            pipe.execute()

    def recent_events(self, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        with _redis(self.url, "read the event log"):
            lines = self.db.lrange(self.key("events"), -limit, -1)
        events = []
        for line in lines:
            item = json.loads(line)
            events.append(Event(int(item["at_us"]), str(item["who"]), str(item["action"]), str(item["detail"])))
        return events

    def close(self) -> None:
        self.db.close()


@dataclass
class PeerSummary:
    node: str
    at_s: float
    fleet: Fleet
    clock: dict[str, Any]


class ClusterLink:
    """One node's link to the others: publishes its changes, applies theirs, shares summaries."""

    def __init__(self, hub: Hub, store: RedisStore, node: str) -> None:
        self.hub = hub
        self.store = store
        self.node = node
        self.channel = store.key("bus")
        self.peers: dict[str, PeerSummary] = {}
        self._client = aioredis.Redis.from_url(store.url)
        # The latest announcement (text, at_us), and the Redis server's run id when last seen (a new one: it restarted).
        self._announcement = store.load_announcement()
        self._redis_run_id: str | None = None

    # --- outgoing --------------------------------------------------------------

    def publish_show(self, snapshot: ShowSnapshot) -> None:
        self._publish({"kind": "show", "epoch": snapshot.epoch, "state": snapshot.state, "start_ns": snapshot.start_ns})

    def publish_announcement(self, text: str, at_us: int) -> None:
        """Store the announcement (StoreError if Redis fails: not made), then tell the other nodes."""
        self.store.save_announcement(text, at_us)
        self._announcement = (text, at_us)
        self._publish({"kind": "announce", "text": text, "at_us": at_us})

    def _publish(self, message: dict[str, Any]) -> None:
        """Best effort: a node that misses a message finds the stored state within a second (``_share``)."""
        message["from"] = self.node
        try:
            self.store.db.publish(self.channel, json.dumps(message))
        except redis.RedisError as exc:
            log.warning("cluster bus: %s not published (%s); other nodes read the stored state", message["kind"], exc)

    def rewrite(self) -> None:
        """Write back what this node holds after Redis lost it (restarted empty): never over newer data.

        The shared secrets (SET NX), the show's state (compare-and-set on the
        epoch), the group of every device connected here (only where absent,
        counted), the latest announcement and the event log (only if empty).
        """
        store, hub = self.store, self.hub
        with _redis(store.url, "write back this node's state"):
            for name, secret in store.secrets.items():
                store.db.set(store.key(name), secret, nx=True)
            store.save_show(hub.stored_show())
            if self._announcement is not None and store.load_announcement() is None:
                store.save_announcement(*self._announcement)
            pipe = store.db.pipeline(transaction=False)
            keys = [store.key("assign"), store.key("group_counts")]
            for device in list(hub.devices):
                store.restore_assign(keys=keys, args=[device.device_id, device.group], client=pipe)
            pipe.execute()
            if store.db.llen(store.key("events")) == 0 and hub.events:
                store.db.rpush(store.key("events"), *(_event_line(e) for e in hub.events))

    async def _check_redis(self) -> None:
        """Notice a Redis restart (a new run id) and write back this node's state then."""
        info = await self._client.info("server")
        run_id = str(info.get("run_id", ""))
        if self._redis_run_id is not None and run_id != self._redis_run_id:
            log.warning("Redis restarted (new run id): writing back this node's show, groups, announcement and events")
            self.rewrite()
            log.info("state written back to Redis: show %s (epoch %d)", self.hub.show.state, self.hub.show.snapshot.epoch)
        self._redis_run_id = run_id

    # --- incoming --------------------------------------------------------------

    def receive(self, data: bytes | str) -> None:
        """Apply one bus message from another node (ours come back too, and are skipped)."""
        try:
            message = json.loads(data)
            if message.get("from") == self.node:
                return
            if message["kind"] == "show":
                start = message["start_ns"]
                self.hub.apply_snapshot(
                    ShowSnapshot(epoch=int(message["epoch"]), state=message["state"], start_ns=None if start is None else int(start))
                )
            elif message["kind"] == "announce":
                self._announcement = (str(message["text"]), int(message["at_us"]))
                self.hub.receive_announcement(*self._announcement)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropped a bad cluster message: %s", exc)

    async def run(self) -> None:
        """Listen to the bus, re-read the stored show and share summaries, until cancelled."""
        tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._share())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._client.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._client.pubsub()
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.receive(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarted or unreachable: retry, the show runs on
                log.warning("cluster bus lost (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _share(self) -> None:
        key = self.store.key("nodes")
        while True:
            try:
                await self._check_redis()
                stored = await self._client.hgetall(key)
                now_s = self.hub.clock.now_ns() / 1e9
                peers: dict[str, PeerSummary] = {}
                for name, value in stored.items():
                    node = _text(name)
                    item = json.loads(value)
                    if node == self.node:
                        continue
                    if now_s - float(item["at_s"]) > NODE_STALE_S:
                        if now_s - float(item["at_s"]) > 60 * NODE_STALE_S:
                            await self._client.hdel(key, node)
                        continue
                    peers[node] = PeerSummary(node, float(item["at_s"]), Fleet.from_dict(item["fleet"]), item.get("clock", {}))
                self.peers = peers
                summary = {"at_s": now_s, "fleet": self.hub.local_fleet().to_dict(), "clock": self.hub.clock_health()}
                await self._client.hset(key, self.node, json.dumps(summary))
                stored_show = self.store.load_show()
                if stored_show is not None and stored_show.snapshot.epoch > self.hub.show.snapshot.epoch:
                    self.hub.apply_snapshot(stored_show.snapshot)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster summary failed (%s); retrying", exc)
            await asyncio.sleep(SUMMARY_INTERVAL_S)

    async def leave(self) -> None:
        """Remove this node's summary (a clean shutdown)."""
        try:
            await self._client.hdel(self.store.key("nodes"), self.node)
        except Exception:  # shutting down anyway
            pass
