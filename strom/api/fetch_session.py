"""Incremental fetch sessions (KIP-227), with Kafka's FetchSession semantics.

A client opens a session with a full fetch at session_epoch 0; the response carries the new
session_id (0 when the cache has no room). Later requests name the session and the next
epoch and carry only the partitions whose fetch position changed, plus the partitions to
forget; the broker fetches every partition of the session and answers only those with
something new: records, a changed high watermark, last stable offset or log start offset, or
an error. session_epoch -1 is a sessionless full fetch (and closes the named session, if any).

The cache holds `max.incremental.fetch.session.cache.slots` sessions. When it is full a new
session may take the slot of one unused for two minutes (least recently used first), else
of the least valuable evictable session if the new one is worth more: a follower's session
is worth more than a consumer's, then the one with more partitions. Consumer sessions are
evictable by followers at once; any session is evictable by anyone once it is two minutes
old. This is Kafka's FetchSessionCache.

This module is pure bookkeeping: the Fetch handler (strom.api.fetch) resolves topics, reads
the partitions and encodes the response. A partition is keyed by (topic key, index), where
the topic key is the topic id in a session opened with Fetch v13+ and the name before.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
EVICTION_MS = 120_000  # Kafka's MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS

# error codes (strom.protocol.errors.ErrorCode; kept as ints so this module stays import-light)
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
FETCH_SESSION_TOPIC_ID_ERROR = 106


def next_epoch(epoch: int) -> int:
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == 0x7FFFFFFF else epoch + 1


class PartitionRequest:
    """What a fetch asks of one partition (a request entry, or a session's cached one)."""

    __slots__ = ("key", "partition", "fetch_offset", "max_bytes", "leader_epoch",
                 "log_start_offset", "high_watermark", "last_stable_offset",
                 "local_log_start_offset")

    def __init__(self, key: Any, partition: int, fetch_offset: int, max_bytes: int,
                 leader_epoch: int = -1, log_start_offset: int = -1) -> None:
        self.key = key
        self.partition = partition
        self.fetch_offset = fetch_offset
        self.max_bytes = max_bytes
        self.leader_epoch = leader_epoch
        self.log_start_offset = log_start_offset
        # what the client was last told (-1: nothing yet, so the next answer includes it)
        self.high_watermark = -1
        self.last_stable_offset = -1
        self.local_log_start_offset = -1

    def update_request(self, other: PartitionRequest) -> None:
        self.fetch_offset = other.fetch_offset
        self.max_bytes = other.max_bytes
        self.leader_epoch = other.leader_epoch
        self.log_start_offset = other.log_start_offset

    def must_respond(self, error_code: int, high_watermark: int, last_stable_offset: int,
                     log_start_offset: int, nbytes: int, diverging: bool = False) -> bool:
        """Whether an incremental response includes this partition (and remember what it
        says): new records, a changed high watermark / LSO / log start, an error."""
        respond = nbytes > 0 or diverging
        if self.high_watermark != high_watermark:
            self.high_watermark = high_watermark
            respond = True
        if self.last_stable_offset != last_stable_offset:
            self.last_stable_offset = last_stable_offset
            respond = True
        if self.local_log_start_offset != log_start_offset:
            self.local_log_start_offset = log_start_offset
            respond = True
        if error_code:
            # sent with every response; -1 makes the first answer after the error clears
            # include the partition again
            self.high_watermark = -1
            respond = True
        return respond

    def __repr__(self) -> str:
        return (f"PartitionRequest({self.key!r}, {self.partition}, "
                f"offset={self.fetch_offset})")


class FetchSession:
    __slots__ = ("id", "privileged", "uses_topic_ids", "partitions", "epoch", "creation_ms",
                 "last_used_ms")

    def __init__(self, session_id: int, privileged: bool, uses_topic_ids: bool,
                 partitions: dict[tuple[Any, int], PartitionRequest], now_ms: float) -> None:
        self.id = session_id
        self.privileged = privileged
        self.uses_topic_ids = uses_topic_ids
        self.partitions = partitions  # in fetch order: answered partitions move to the end
        self.epoch = next_epoch(INITIAL_EPOCH)
        self.creation_ms = now_ms
        self.last_used_ms = now_ms

    def __len__(self) -> int:
        return len(self.partitions)

    def evictable_key(self) -> tuple[bool, int, int]:
        return (self.privileged, len(self.partitions), self.id)

    def update(self, entries: Iterable[PartitionRequest],
               forgotten: Iterable[tuple[Any, int]]) -> tuple[int, int, int]:
        """Apply an incremental request: entries are added or update their cached request;
        forgotten partitions leave. Returns (added, updated, removed) counts."""
        added = updated = removed = 0
        parts = self.partitions
        for e in entries:
            cached = parts.get((e.key, e.partition))
            if cached is None:
                parts[(e.key, e.partition)] = e
                added += 1
            else:
                cached.update_request(e)
                updated += 1
        for tp in forgotten:
            if parts.pop(tp, None) is not None:
                removed += 1
        return added, updated, removed


class SessionError:
    """A request that names a session it cannot use: answered with `error_code` alone."""

    __slots__ = ("error_code",)
    session_id = INVALID_SESSION_ID

    def __init__(self, error_code: int) -> None:
        self.error_code = error_code


class FullContext:
    """A full fetch: every requested partition is answered. With `cache` (epoch 0) a new
    session of these partitions is created when the response is built."""

    __slots__ = ("cache", "privileged", "uses_topic_ids", "entries", "session_id")
    error_code = 0

    def __init__(self, entries: list[PartitionRequest], cache: FetchSessionCache | None = None,
                 privileged: bool = False, uses_topic_ids: bool = False) -> None:
        self.entries = entries
        self.cache = cache
        self.privileged = privileged
        self.uses_topic_ids = uses_topic_ids
        self.session_id = INVALID_SESSION_ID

    def partitions(self) -> list[PartitionRequest]:
        return self.entries

    def respond(self, results: Sequence[tuple[PartitionRequest, int, int, int, int, int]]
                ) -> list[int]:
        """`results`: (entry, error_code, high_watermark, last_stable_offset,
        log_start_offset, nbytes) per partition of `partitions()`, in order. Returns the
        indexes of the results to answer (all of them) and sets `session_id`."""
        if self.cache is not None:
            parts = {}
            for entry, code, hw, lso, start, _n in results:
                entry.must_respond(code, hw, lso, start, 0)
                parts[(entry.key, entry.partition)] = entry
            self.session_id = self.cache.maybe_create(self.privileged, self.uses_topic_ids,
                                                      parts)
        return list(range(len(results)))


class IncrementalContext:
    """An incremental fetch in `session`: all its partitions are read, and only those with
    something new are answered."""

    __slots__ = ("session", "expected_epoch", "error_code")

    def __init__(self, session: FetchSession) -> None:
        self.session = session
        self.expected_epoch = session.epoch  # the epoch after this request's
        self.error_code = 0

    @property
    def session_id(self) -> int:
        return self.session.id

    def partitions(self) -> list[PartitionRequest]:
        return list(self.session.partitions.values())

    def respond(self, results: Sequence[tuple[PartitionRequest, int, int, int, int, int]]
                ) -> list[int]:
        if self.session.epoch != self.expected_epoch:
            # another request of the session came in while this one was parked (a duplicate
            # request): as Kafka, this one is refused and leaves the session as it is
            self.error_code = INVALID_FETCH_SESSION_EPOCH
            return []
        keep = []
        parts = self.session.partitions
        for i, (entry, code, hw, lso, start, nbytes) in enumerate(results):
            if entry.must_respond(code, hw, lso, start, nbytes):
                keep.append(i)
                # answered partitions go to the end of the fetch order, so that a small
                # response limit does not starve the partitions behind them
                tp = (entry.key, entry.partition)
                if parts.get(tp) is entry:
                    del parts[tp]
                    parts[tp] = entry
        return keep


class FetchSessionCache:
    """The broker's sessions (Kafka's FetchSessionCache)."""

    def __init__(self, max_entries: int, monotonic: Callable[[], float],
                 eviction_ms: int = EVICTION_MS, rng: random.Random | None = None) -> None:
        self.max_entries = max_entries
        self.eviction_ms = eviction_ms
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        # by last use, least recent first (touch moves a session to the end)
        self._sessions: dict[int, FetchSession] = {}

    def _now_ms(self) -> float:
        return self._monotonic() * 1000

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: int) -> FetchSession | None:
        return self._sessions.get(session_id)

    def remove(self, session_id: int) -> FetchSession | None:
        return self._sessions.pop(session_id, None)

    def touch(self, session: FetchSession) -> None:
        session.last_used_ms = self._now_ms()
        if self._sessions.pop(session.id, None) is not None:
            self._sessions[session.id] = session

    def maybe_create(self, privileged: bool, uses_topic_ids: bool,
                     partitions: dict[tuple[Any, int], PartitionRequest]) -> int:
        """A new session of `partitions` if there is room (evicting one if Kafka would):
        its id, else INVALID_SESSION_ID."""
        now = self._now_ms()
        if len(self._sessions) >= self.max_entries and \
                not self._try_evict(privileged, len(partitions), now):
            return INVALID_SESSION_ID
        session_id = self._new_id()
        self._sessions[session_id] = FetchSession(session_id, privileged, uses_topic_ids,
                                                  partitions, now)
        return session_id

    def _new_id(self) -> int:
        while True:
            session_id = self._rng.randint(1, 0x7FFFFFFF)
            if session_id not in self._sessions:
                return session_id

    def _try_evict(self, privileged: bool, size: int, now: float) -> bool:
        if not self._sessions:
            return False
        oldest = next(iter(self._sessions.values()))
        if now - oldest.last_used_ms > self.eviction_ms:
            del self._sessions[oldest.id]
            return True
        # no stale session: the least valuable evictable one, if worth less than the new one
        # (a follower may evict any consumer session; anyone may evict a session older than
        # the eviction time)
        candidates = [s for s in self._sessions.values()
                      if now - s.creation_ms > self.eviction_ms
                      or (privileged and not s.privileged)]
        if not candidates:
            return False
        victim = min(candidates, key=FetchSession.evictable_key)
        if (privileged, size, 0) < victim.evictable_key():
            return False
        del self._sessions[victim.id]
        return True

    def new_context(self, session_id: int, epoch: int, privileged: bool,
                    uses_topic_ids: bool, entries: list[PartitionRequest],
                    forgotten: list[tuple[Any, int]]
                    ) -> FullContext | IncrementalContext | SessionError:
        """The context of one Fetch request (Kafka's FetchManager.newContext)."""
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                self.remove(session_id)
            if epoch == FINAL_EPOCH:
                return FullContext(entries)
            return FullContext(entries, self, privileged, uses_topic_ids)
        session = self._sessions.get(session_id)
        if session is None:
            return SessionError(FETCH_SESSION_ID_NOT_FOUND)
        if session.epoch != epoch:
            return SessionError(INVALID_FETCH_SESSION_EPOCH)
        if session.uses_topic_ids != uses_topic_ids:
            return SessionError(FETCH_SESSION_TOPIC_ID_ERROR)
        session.update(entries, forgotten)
        if not session.partitions:
            # nothing left to fetch: the session is closed and the answer sessionless
            self.remove(session.id)
            return FullContext(entries)
        self.touch(session)
        session.epoch = next_epoch(session.epoch)
        return IncrementalContext(session)
