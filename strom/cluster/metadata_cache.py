"""MetadataCache: each broker's read-only view of the cluster, kept current by watches.

Readers (API handlers, the replica manager) see immutable TopicInfo/BrokerInfo snapshots.
Listeners registered with `on_change` are called with the names of topics whose
assignment, partition state or configs changed (or that were deleted) after the cache
was updated; one listener's failure is logged and the others are still called.

A refresh that fails (ZooKeeper unreachable, a request timed out) keeps what it had to
load and is tried again after a back-off, until it succeeds: a watch fires once per
change, so a change whose load failed would otherwise stay unseen until the next change
of the same topic (a coordinator that never loads a partition it leads, a leader whose
ISR writes keep failing on a stale version). Owned by the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from strom.cluster import log_dir_failures, model
from strom.cluster.store import MetadataStore, StoreError

log = logging.getLogger(__name__)

# back-off between tries of a failed refresh: doubles from the first to the last
RETRY_BACKOFF_S = (0.1, 2.0)

TopicsListener = Callable[[set[str]], None]


class MetadataCache:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.brokers: dict[int, model.BrokerInfo] = {}
        self.topics: dict[str, model.TopicInfo] = {}
        self._names_by_id: dict = {}  # topic id -> name, for `topic_by_id`
        self.controller_id: int = -1
        self.cluster_id: str | None = None
        # KIP-112: partition -> the brokers whose replica of it is in a failed log dir
        self.failed_replicas: dict[tuple[str, int], frozenset[int]] = {}
        self._listeners: list[TopicsListener] = []
        self._dirty: set[str] = set()
        self._refresh_task: asyncio.Task | None = None
        self._watched_topics: set[str] = set()
        self._watched_states: set[tuple[str, int]] = set()
        self._brokers_dirty = False
        self._stopped = False
        self._load_lock = asyncio.Lock()
        self._brokers_task: asyncio.Task | None = None

    def stop(self) -> None:
        """No more refreshes (shutdown, before the store closes)."""
        self._stopped = True
        for task in (self._refresh_task, self._brokers_task):
            if task is not None:
                task.cancel()

    def on_change(self, listener: TopicsListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        self.store.watch_children(model.TOPICS, lambda _: self._schedule(None))
        self.store.watch_children(model.BROKER_IDS, lambda _: self._schedule_brokers())
        self.store.watch_data(model.CONTROLLER, lambda _: self._schedule_brokers())
        self.store.watch_children(model.LOG_DIR_EVENT_NOTIFICATION,
                                  lambda _: self._schedule_brokers())
        await self._load_brokers()
        await self._load_all_topics()

    # --- refresh ------------------------------------------------------------------------
    def _schedule(self, topic: str | None) -> None:
        if self._stopped:
            return
        self._dirty.add(topic if topic is not None else "*")
        self._ensure_refresher()

    def _ensure_refresher(self) -> None:
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(
                _retrying(self._refresh, lambda: bool(self._dirty) and not self._stopped,
                          "Metadata refresh"))
            self._refresh_task.add_done_callback(_log_failure)

    def _schedule_brokers(self) -> None:
        # one loader at a time, re-run while changes arrive: two overlapping loads could
        # finish in the wrong order and leave an older broker list in place
        if self._stopped:
            return
        self._brokers_dirty = True
        if self._brokers_task is None or self._brokers_task.done():
            self._brokers_task = asyncio.get_running_loop().create_task(
                self._reload_brokers())
            self._brokers_task.add_done_callback(_log_failure)

    async def _reload_brokers(self) -> None:
        async def reload() -> None:
            while self._brokers_dirty and not self._stopped:
                self._brokers_dirty = False
                try:
                    await self._load_brokers()
                except BaseException:
                    self._brokers_dirty = True  # not loaded: the next try loads them
                    raise

        await _retrying(reload, lambda: self._brokers_dirty and not self._stopped,
                        "Broker list refresh")

    async def _refresh(self) -> None:
        # loads run one at a time (refresh_now may run beside the watch-driven task): a
        # load that read older data must never finish after one that read newer data
        async with self._load_lock:
            while self._dirty and not self._stopped:
                dirty, self._dirty = self._dirty, set()
                try:
                    if "*" in dirty:
                        changed = await self._load_all_topics(notify=False)
                    else:
                        changed = set()
                        for name in dirty:
                            await self._load_topic(name)
                            changed.add(name)
                except BaseException:
                    # loaded in part (and listeners not told): all of it again next time
                    self._dirty |= dirty
                    raise
                self._notify(changed)

    async def refresh_now(self, topics: set[str] | None = None) -> None:
        """Load `topics` (and anything pending) now: after this broker's own controller
        wrote, so the answer to the request that caused the write already shows it.
        Raises the store's error; the load is then retried in the background."""
        self._dirty |= topics or set()
        try:
            await self._refresh()
        except Exception:
            if not self._stopped:
                self._ensure_refresher()
            raise

    def _notify(self, changed: set[str]) -> None:
        if changed:
            for listener in self._listeners:
                try:
                    listener(changed)
                except Exception:
                    log.exception("Metadata listener %r failed on a change of %s", listener,
                                  sorted(changed))

    async def _load_brokers(self) -> None:
        brokers = {}
        for child in await self.store.get_children(model.BROKER_IDS):
            node = await self.store.get(f"{model.BROKER_IDS}/{child}")
            if node is not None:
                brokers[int(child)] = model.BrokerInfo.from_json(int(child), node[0])
        self.brokers = brokers
        self.failed_replicas = await log_dir_failures.read(self.store, brokers)
        node = await self.store.get(model.CONTROLLER)
        self.controller_id = json.loads(node[0])["brokerid"] if node and node[0] else -1
        node = await self.store.get(model.CLUSTER_ID)
        if node is not None:
            self.cluster_id = json.loads(node[0])["id"]

    async def _load_all_topics(self, notify: bool = True) -> set[str]:
        names = set(await self.store.get_children(model.TOPICS))
        changed = set(self.topics) - names
        for gone in changed:
            self._names_by_id.pop(self.topics.pop(gone).topic_id, None)
        for name in names:
            await self._load_topic(name)
        changed |= names
        if notify:
            self._notify(changed)
        return changed

    async def _load_topic(self, name: str) -> None:
        node = await self.store.get(model.topic_path(name))
        if node is None:
            gone = self.topics.pop(name, None)
            if gone is not None:
                self._names_by_id.pop(gone.topic_id, None)
            return
        if name not in self._watched_topics:
            self._watched_topics.add(name)
            self.store.watch_data(model.topic_path(name), lambda _, n=name: self._schedule(n))
            self.store.watch_data(model.topic_config_path(name),
                                  lambda _, n=name: self._schedule(n))
        assignment = model.TopicAssignment.from_json(name, node[0], node[1])
        partitions = {}
        for p, replicas in assignment.replicas.items():
            path = model.partition_state_path(name, p)
            if (name, p) not in self._watched_states:
                self._watched_states.add((name, p))
                self.store.watch_data(path, lambda _, n=name: self._schedule(n))
            st = await self.store.get(path)
            state = model.PartitionState.from_json(st[0], st[1]) if st else \
                model.PartitionState(model.NO_LEADER, -1, ())
            partitions[p] = model.PartitionInfo(p, replicas, state)
        cfg = await self.store.get(model.topic_config_path(name))
        configs = model.decode_topic_config(cfg[0]) if cfg and cfg[0] else {}
        before = self.topics.get(name)
        if before is not None:  # a topic made anew under its name has another id
            self._names_by_id.pop(before.topic_id, None)
        self.topics[name] = model.TopicInfo(
            name, assignment.topic_id, partitions, configs,
            frozenset(assignment.adding) | frozenset(assignment.removing))
        self._names_by_id[assignment.topic_id] = name

    # --- queries ------------------------------------------------------------------------
    def topic(self, name: str) -> model.TopicInfo | None:
        return self.topics.get(name)

    def topic_by_id(self, topic_id) -> model.TopicInfo | None:
        """The topic with this id (every Fetch v13+ asks): found by the map of ids to names
        the loads keep, else by a scan (what is in `topics` is the truth), which mends the
        map."""
        t = self.topics.get(self._names_by_id.get(topic_id))
        if t is not None and t.topic_id == topic_id:
            return t
        for t in self.topics.values():
            if t.topic_id == topic_id:
                self._names_by_id[topic_id] = t.name
                return t
        return None

    def partition(self, topic: str, partition: int) -> model.PartitionInfo | None:
        t = self.topics.get(topic)
        return t.partitions.get(partition) if t else None

    def endpoint(self, broker_id: int, listener: str) -> model.Endpoint | None:
        b = self.brokers.get(broker_id)
        if b is None:
            return None
        for e in b.endpoints:
            if e.listener == listener:
                return e
        return b.endpoints[0] if b.endpoints else None


async def _retrying(load: Callable[[], Awaitable[None]], pending: Callable[[], bool],
                    what: str) -> None:
    """Run `load` until it succeeds or nothing is `pending`; a store error is logged and
    tried again after a back-off (RETRY_BACKOFF_S)."""
    delay, failures = RETRY_BACKOFF_S[0], 0
    while True:
        try:
            await load()
            return
        except StoreError as e:
            if not pending():
                return
            failures += 1
            # ZooKeeper may be away for minutes: the first failure and every 20th are told
            level = logging.WARNING if failures % 20 == 1 else logging.DEBUG
            log.log(level, "%s failed (%d in a row; next try in %.1f s): %s", what,
                    failures, delay, e)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_BACKOFF_S[1])
        if not pending():
            return


def _log_failure(task: asyncio.Task) -> None:
    # store errors are retried (_retrying): what ends a refresh task is a bug
    if not task.cancelled() and task.exception() is not None:
        log.error("Metadata refresh failed", exc_info=task.exception())
