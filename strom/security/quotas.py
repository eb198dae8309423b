"""Client quotas as Kafka's ClientQuotaManager: byte rates and request time per user and
client id, measured over a sliding window, answered with a throttle time.

Quotas (`QUOTA_KEYS`): producer_byte_rate (bytes of produced records per second),
consumer_byte_rate (bytes of fetch responses per second), request_percentage (percent of
one event loop's time spent handling the client's requests; Kafka counts request handler
and network threads, strom has one loop), controller_mutation_rate (partitions created or
deleted per second by CreateTopics, CreatePartitions and DeleteTopics, KIP-599; measured by
a token bucket, `ControllerMutationQuota` in strom.api.throttling applies it).

Storage, Kafka's layout, `{"version":1,"config":{"producer_byte_rate":"1048576"}}` (other
keys of the node, such as SCRAM credentials, are kept):

  /config/users/<user>                   /config/users/<default>
  /config/users/<user>/clients/<client>  /config/users/<default>/clients/<client>
  /config/users/<user>/clients/<default> /config/users/<default>/clients/<default>
  /config/clients/<client>               /config/clients/<default>
  /config/changes/config_change_<10 digits>  {"version":2,"entity_path":"users/alice"}

Names are URL-encoded in paths (Kafka's Sanitizer). Every broker watches /config/changes
and re-reads the quota nodes when a notification is added.

Precedence, for each quota key separately (Kafka's order): user+client, user+default
client, user, default user+client, default user+default client, default user, client,
default client. The first entity that sets the key gives the bound, and every client that
resolves to the same entity shares one sensor (one rate).

Measure (Kafka's Rate over SampledStat): `quota.window.num` samples of
`quota.window.size.seconds`; the rate is the sum of the live samples over the time they
span, counted as at least (num - 1) windows so a first burst is not over-weighted. Over the
bound, the throttle time is (rate - bound) / bound x that time (Kafka's QuotaUtils): the
response carries it as throttle_time_ms and the
connection reads no further request for that long (KIP-219), so nothing is dropped.

State: quotas and sensors are owned by the event loop.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from strom.cluster.store import BadVersionError, MetadataStore, NodeExistsError, NoNodeError
from strom.tasks import spawn

log = logging.getLogger(__name__)

USERS_PATH = "/config/users"
CLIENTS_PATH = "/config/clients"
CHANGES_PATH = "/config/changes"
CHANGE_PREFIX = "config_change_"
DEFAULT = "<default>"
KEEP_NOTIFICATIONS = 100
USER, CLIENT_ID = "user", "client-id"
PRODUCE, FETCH, REQUEST = "producer_byte_rate", "consumer_byte_rate", "request_percentage"
MUTATION = "controller_mutation_rate"
# key -> whether its values are whole numbers (Kafka: LONG) or not (DOUBLE)
QUOTA_KEYS: dict[str, bool] = {PRODUCE: True, FETCH: True, REQUEST: False, MUTATION: False}

# An entity: (user, client id); each part None when absent, DEFAULT for the default
Entity = tuple[str | None, str | None]


class QuotaError(ValueError):
    """A request Kafka refuses with INVALID_REQUEST; the text is Kafka's message."""


def _sanitize(name: str) -> str:
    return urllib.parse.quote(name, safe="").replace("*", "%2A")


def _desanitize(name: str) -> str:
    return urllib.parse.unquote(name)


def entity_path(entity: Entity) -> str:
    user, client = entity
    if user is not None:
        path = f"{USERS_PATH}/{DEFAULT if user == DEFAULT else _sanitize(user)}"
        if client is not None:
            path += f"/clients/{DEFAULT if client == DEFAULT else _sanitize(client)}"
        return path
    assert client is not None
    return f"{CLIENTS_PATH}/{DEFAULT if client == DEFAULT else _sanitize(client)}"


def precedence(user: str, client: str) -> list[Entity]:
    """The entities a quota is looked up in, first match wins (Kafka's order)."""
    return [(user, client), (user, DEFAULT), (user, None), (DEFAULT, client),
            (DEFAULT, DEFAULT), (DEFAULT, None), (None, client), (None, DEFAULT)]


def parse_value(key: str, value: float) -> float:
    if key not in QUOTA_KEYS:
        raise QuotaError(f"Invalid configuration key {key}")
    if value <= 0:
        raise QuotaError(f"Quota {key} must be positive, got {value}")
    if QUOTA_KEYS[key] and value != int(value):
        raise QuotaError(f"Quota {key} must be a whole number, got {value}")
    return value


@dataclass(slots=True)
class Rate:
    """Kafka's Rate: `num` samples of `window_ms`, oldest dropped first."""

    num: int
    window_ms: float
    samples: list[list[float]] = field(default_factory=list)  # [start_ms, value]

    def record(self, value: float, now_ms: float) -> None:
        if not self.samples or now_ms - self.samples[-1][0] >= self.window_ms:
            self.samples.append([now_ms, 0.0])
            del self.samples[:-self.num]
        self.samples[-1][1] += value

    def measure(self, now_ms: float) -> tuple[float, float]:
        """(rate per second, the time in ms it is measured over)."""
        live = [s for s in self.samples if now_ms - s[0] < self.num * self.window_ms]
        self.samples = live
        if not live:
            return 0.0, (self.num - 1) * self.window_ms
        elapsed = now_ms - live[0][0]
        full = int(elapsed // self.window_ms)
        if full < self.num - 1:
            elapsed += (self.num - 1 - full) * self.window_ms
        return sum(v for _, v in live) / (elapsed / 1000), elapsed


@dataclass(slots=True)
class TokenBucket:
    """Kafka's TokenBucket (KIP-599): refilled at the quota's rate up to a burst of
    bound x `num` x window; a mutation takes its permits even when that leaves the bucket
    below zero, and the quota is exceeded while it is below zero."""

    burst_s: float  # num x window, in seconds
    tokens: float | None = None  # None: full
    last_ms: float = 0.0

    def update(self, bound: float, now_ms: float) -> float:
        """The tokens left now (refilled since the last update)."""
        burst = bound * self.burst_s
        if self.tokens is None:
            self.tokens = burst
        else:
            self.tokens = min(burst, self.tokens + bound * max(0.0, now_ms - self.last_ms) / 1000)
        self.last_ms = now_ms
        return self.tokens

    def throttle_ms(self, bound: float, now_ms: float) -> int:
        """How long until the bucket is back at zero (0: within the quota)."""
        tokens = self.update(bound, now_ms)
        return round(-tokens / bound * 1000) if tokens < 0 else 0

    def record(self, permits: float, bound: float, now_ms: float) -> None:
        self.update(bound, now_ms)
        self.tokens -= permits


class ClientQuotaManager:
    """The quotas of every entity, and one rate per (quota key, entity in use)."""

    def __init__(self, store: MetadataStore, window_num: int, window_s: int,
                 now_ms: Callable[[], float], mutation_window_num: int = 11,
                 mutation_window_s: int = 1) -> None:
        self.store = store
        self.window_num = window_num
        self.window_ms = window_s * 1000
        self.now_ms = now_ms
        self.mutation_burst_s = mutation_window_num * mutation_window_s
        self.quotas: dict[Entity, dict[str, float]] = {}
        self.sensors: dict[tuple[str, Entity], Rate] = {}
        self.buckets: dict[Entity, TokenBucket] = {}
        self._tasks: set = set()
        self._reloads = 0
        self._applied = 0

    # --- start-up and following changes -------------------------------------------------
    async def start(self) -> None:
        try:
            await self.store.create(CHANGES_PATH, b"")
        except NodeExistsError:
            pass
        self.store.watch_children(CHANGES_PATH, self._on_change)
        await self.reload()

    def _on_change(self, _path: str) -> None:
        spawn(self.reload(), "reload client quotas", self._tasks)

    async def reload(self) -> None:
        self._reloads += 1
        number = self._reloads
        fresh: dict[Entity, dict[str, float]] = {}

        async def read(entity: Entity) -> None:
            quotas = _quotas_of(await self.store.get(entity_path(entity)))
            if quotas:
                fresh[entity] = quotas

        for user in await self.store.get_children(USERS_PATH):
            u = DEFAULT if user == DEFAULT else _desanitize(user)
            await read((u, None))
            for client in await self.store.get_children(f"{USERS_PATH}/{user}/clients"):
                await read((u, DEFAULT if client == DEFAULT else _desanitize(client)))
        for client in await self.store.get_children(CLIENTS_PATH):
            await read((None, DEFAULT if client == DEFAULT else _desanitize(client)))
        if number > self._applied:
            self._applied = number
            self.quotas = fresh

    # --- throttling -----------------------------------------------------------------------
    def bound(self, key: str, principal: str, client_id: str) -> tuple[Entity, float] | None:
        """The entity whose quota applies to the client, and the bound; None: unlimited."""
        if not self.quotas:
            return None
        user = principal.partition(":")[2] or principal
        for entity in precedence(user, client_id):
            value = self.quotas.get(entity, {}).get(key)
            if value is not None:
                return entity, value
        return None

    def max_window_value(self, key: str, principal: str, client_id: str) -> float | None:
        """The most the client may use within the measured windows (Kafka's
        getMaxValueInQuotaWindow: bound x (num - 1) x window size); None: unlimited. A
        consumer's fetch is capped at it, so one response can never exceed the quota for
        good (and starve the consumer)."""
        found = self.bound(key, principal, client_id)
        if found is None:
            return None
        return found[1] * (self.window_num - 1 or 1) * self.window_ms / 1000

    def unrecord(self, key: str, principal: str, client_id: str, value: float) -> None:
        """Take back a recorded `value` (a throttled fetch whose records are not sent)."""
        found = self.bound(key, principal, client_id)
        rate = self.sensors.get((key, found[0])) if found is not None else None
        if rate is not None:
            rate.record(-value, self.now_ms())

    def record(self, key: str, principal: str, client_id: str, value: float) -> int:
        """Record `value` against the client's quota of `key`; the throttle time in ms
        (0 when within the bound or unlimited)."""
        found = self.bound(key, principal, client_id)
        if found is None:
            return 0
        entity, bound = found
        rate = self.sensors.get((key, entity))
        if rate is None:
            rate = self.sensors[(key, entity)] = Rate(self.window_num, self.window_ms)
        now = self.now_ms()
        rate.record(value, now)
        observed, over_ms = rate.measure(now)
        if observed <= bound:
            return 0
        return int((observed - bound) / bound * over_ms)

    def _bucket(self, principal: str, client_id: str) -> tuple[TokenBucket, float] | None:
        found = self.bound(MUTATION, principal, client_id)
        if found is None:
            return None
        entity, bound = found
        bucket = self.buckets.get(entity)
        if bucket is None:
            bucket = self.buckets[entity] = TokenBucket(self.mutation_burst_s)
        return bucket, bound

    def mutation_throttle(self, principal: str, client_id: str) -> int:
        """The throttle time (ms) the client's controller_mutation_rate asks for now: > 0
        when its bucket is below zero; 0 within the quota or unlimited."""
        found = self._bucket(principal, client_id)
        return 0 if found is None else found[0].throttle_ms(found[1], self.now_ms())

    def record_mutation(self, principal: str, client_id: str, permits: float) -> int:
        """Take `permits` (partitions) from the client's bucket; the throttle time after."""
        found = self._bucket(principal, client_id)
        if found is None:
            return 0
        bucket, bound = found
        now = self.now_ms()
        bucket.record(permits, bound, now)
        return bucket.throttle_ms(bound, now)

    # --- administration -------------------------------------------------------------------
    def describe(self, components: list[tuple[str, int, str | None]], strict: bool
                 ) -> list[tuple[Entity, dict[str, float]]]:
        """Entities matching every component (entity type, match type 0 exact / 1
        default / 2 any specified, name), with their quotas. Kafka's filter rules."""
        seen: set[str] = set()
        for etype, match_type, name in components:
            if etype not in (USER, CLIENT_ID):
                raise QuotaError(f"Custom entity type {etype!r} not supported")
            if etype in seen:
                raise QuotaError(f"Entity type {etype} cannot appear more than once in the "
                                 "filter.")
            seen.add(etype)
            if match_type not in (0, 1, 2):
                raise QuotaError(f"Unknown match type {match_type}")
            if match_type == 0 and name is None:
                raise QuotaError("Exact match requires a name (use the default match type "
                                 "for the default entity)")
        out = []
        for entity, quotas in sorted(self.quotas.items(), key=lambda e: str(e[0])):
            parts = {USER: entity[0], CLIENT_ID: entity[1]}
            if strict and {t for t, v in parts.items() if v is not None} != seen:
                continue
            if all(_matches(parts[etype], match_type, name)
                   for etype, match_type, name in components):
                out.append((entity, dict(quotas)))
        return out

    async def alter(self, entity: Entity, ops: Iterable[tuple[str, float | None]],
                    validate_only: bool) -> None:
        """Set (a value) or remove (None) quota keys of one entity; QuotaError first for
        any bad key or value, so nothing is half-applied."""
        ops = [(key, None if value is None else parse_value(key, value))
               if key in QUOTA_KEYS else _unknown(key) for key, value in ops]
        if validate_only:
            return
        path = entity_path(entity)
        while True:
            node = await self.store.get(path)
            doc = json.loads(node[0]) if node and node[0] else {"version": 1, "config": {}}
            config = doc.setdefault("config", {})
            for key, value in ops:
                if value is None:
                    config.pop(key, None)
                else:
                    config[key] = str(int(value)) if QUOTA_KEYS[key] else str(value)
            data = json.dumps(doc).encode()
            try:
                if node is None:
                    await self.store.create(path, data)
                else:
                    await self.store.set(path, data, node[1])
                break
            except (BadVersionError, NodeExistsError, NoNodeError):
                continue
        await self._notify(path.removeprefix("/config/"))
        await self.reload()  # in force on this broker when the request is answered

    async def _notify(self, entity_path_: str) -> None:
        data = json.dumps({"version": 2, "entity_path": entity_path_}).encode()
        while True:
            children = sorted(c for c in await self.store.get_children(CHANGES_PATH)
                              if c.startswith(CHANGE_PREFIX))
            seq = int(children[-1][len(CHANGE_PREFIX):]) + 1 if children else 0
            try:
                await self.store.create(f"{CHANGES_PATH}/{CHANGE_PREFIX}{seq:010d}", data)
                break
            except NodeExistsError:
                continue
        for old in children[:max(0, len(children) + 1 - KEEP_NOTIFICATIONS)]:
            try:
                await self.store.delete(f"{CHANGES_PATH}/{old}")
            except NoNodeError:
                pass


def _unknown(key: str):
    raise QuotaError(f"Invalid configuration key {key}")


def _matches(value: str | None, match_type: int, name: str | None) -> bool:
    if match_type == 0:
        return value == name
    if match_type == 1:
        return value == DEFAULT
    return value is not None and value != DEFAULT


def _quotas_of(node: tuple[bytes, int] | None) -> dict[str, float]:
    if node is None or not node[0]:
        return {}
    try:
        config = json.loads(node[0]).get("config", {})
        return {k: float(v) for k, v in config.items() if k in QUOTA_KEYS}
    except (ValueError, AttributeError) as e:
        log.error("Ignoring unreadable quota config: %s", e)
        return {}
