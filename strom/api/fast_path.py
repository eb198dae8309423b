"""The two commonest requests, served without building the request entity.

A producer with `linger.ms=0` sends one partition's batch per Produce request, and a
consumer tailing its partitions sends a Fetch after each answer (sessionless from
librdkafka and aiokafka, incremental in a fetch session from kafka-python and the Java
client). For such a request most of the broker's CPU went to the generic path around the
work: kio's parse with its length and null checks, the request context, the handler's loops
and tables; and on a small machine that code, run once per wake-up, is also what falls out
of the CPU's caches between requests (see docs/performance.md, "fast path").

`FastPath` reads exactly these shapes from the frame (Produce v3-v12: no transactional id,
acks 0, 1 or -1, one topic with one partition and its records, acks=-1 only where this
broker is the partition's whole ISR, so that the append itself completes it; Fetch v4-v17:
a consumer's fetch with nothing forgotten, either sessionless, of one or more partitions
(no topic or partition named twice), or incremental in a session at the epoch the session
expects, naming partitions it holds or none; either request with no tagged field anywhere
in the frame, header included) and calls what the handlers call:
`ReplicaManager.append_plain` (the plain case of `append_produced`) and the Produce answer's
template, `ReplicaManager.fetch` and the Fetch encoder; a session is moved on by
`FetchSessionCache.new_context`, its partitions read as `fetch.session_reads` gives them
and its answer built by `fetch.session_topics`, as the handler does. It answers only when
the broker has no authorizer and no client quota (the handlers' work for those is not
repeated here); with metrics on, the dispatcher counts its requests and `append_plain`
its records and bytes, as for the full path. Anything else returns None before any work
is done, and the dispatcher serves the request as usual: another shape or version, a
frame it cannot read to the end or whose strings are not UTF-8, a null where the handlers
would refuse one, a session being opened or closed, unknown, at another epoch or adding
a partition, an internal topic, a transactional or compacted batch, an unknown topic id
in the request, a missing Produce answer template, or any
KafkaError from the append (raised before anything is written; the full path then answers
with the error). So every answer it gives is the one the handlers give, which
tests/unit/test_fast_path.py checks frame by frame against the full path.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from strom.api import fetch, produce
from strom.api.fetch import RawResponse, partition_data
from strom.api.fetch_session import (
    FetchSessionCache,
    IncrementalContext,
    PartitionRequest,
    SessionError,
)
from strom.protocol import fetch_response
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.varint import VarintError, read_uvarint
from strom.replication.replica_manager import (
    FetchPartitionRequest,
    FetchPartitionResult,
    ParkedCall,
)

if TYPE_CHECKING:
    from strom.api.context import BrokerServices

log = logging.getLogger(__name__)

PRODUCE, FETCH = 0, 1
PRODUCE_VERSIONS = range(3, 13)
FETCH_VERSIONS = range(4, 18)
NO_RESPONSE = produce.NO_RESPONSE
MAX_TOPIC_IDS = 1024  # topic ids whose UUID FastPath keeps (all dropped when full)
_NONE_DENIED: frozenset[str] = frozenset()  # no authorizer on the fast path

_HEAD = struct.Struct(">hhi")  # api key, version, correlation id
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_FETCH_HEAD = struct.Struct(">iiiib")  # replica_id, max_wait_ms, min/max_bytes, isolation
_FETCH_HEAD_15 = struct.Struct(">iiib")  # v15+: the same without replica_id
_SESSION = struct.Struct(">ii")  # v7+: session_id, session_epoch
_I64 = struct.Struct(">q")


class _Unread(Exception):
    """The frame is not one of the shapes read here (or not readable): the full path."""


def _uvarint(frame, pos: int, end: int) -> tuple[int, int]:
    if pos < end:
        b = frame[pos]
        if b < 0x80:  # one byte: most lengths, counts and tag counts
            return b, pos + 1
    try:
        return read_uvarint(frame, pos, end)
    except VarintError:
        raise _Unread from None


def _string(frame, pos: int, end: int, flexible: bool) -> tuple[str, int]:
    """A non-null string (compact in a flexible version)."""
    if flexible:
        n, pos = _uvarint(frame, pos, end)
        n -= 1
    else:
        if pos + 2 > end:
            raise _Unread
        n = _I16.unpack_from(frame, pos)[0]
        pos += 2
    if n < 0 or pos + n > end:
        raise _Unread
    try:
        return str(frame[pos:pos + n], "utf-8"), pos + n
    except UnicodeDecodeError:
        raise _Unread from None


def _count(frame, pos: int, end: int, flexible: bool) -> tuple[int, int]:
    """An array's length (-1: null)."""
    if flexible:
        n, pos = _uvarint(frame, pos, end)
        return n - 1, pos
    if pos + 4 > end:
        raise _Unread
    return _I32.unpack_from(frame, pos)[0], pos + 4


def _no_tags(frame, pos: int, end: int) -> int:
    """Past an empty tagged-field section. A section with any field in it sends the frame
    to the full path, which reads the fields the version knows (a wrong size refused) and
    skips unknown ones: clients send none on these requests."""
    if pos < end and not frame[pos]:
        return pos + 1
    raise _Unread


def _header(frame, end: int, flexible: bool) -> int:
    """Past the request header: the client id (a non-compact nullable string, which must
    be UTF-8 as the full parse requires) and, from header v2, its tagged fields."""
    pos = 8
    if pos + 2 > end:
        raise _Unread
    n = _I16.unpack_from(frame, pos)[0]
    pos += 2
    if n < -1:  # kio refuses a negative length other than null's
        raise _Unread
    if n > 0:
        if pos + n > end:
            raise _Unread
        try:
            str(frame[pos:pos + n], "utf-8")
        except UnicodeDecodeError:
            raise _Unread from None
        pos += n
    if flexible:
        pos = _no_tags(frame, pos, end)
    return pos


class FastPath:
    def __init__(self, services: BrokerServices) -> None:
        self.services = services
        # a Fetch's topic id (v13+) -> its UUID: the same few ids come in every request
        self._topic_ids: dict[bytes, uuid.UUID] = {}

    def applies(self) -> bool:
        """No authorizer, no client quota: nothing the handlers would check beyond the work."""
        services = self.services
        quotas = services.quotas
        return services.authorizer is None and (quotas is None or not quotas.quotas)

    # --- Produce ---------------------------------------------------------------------------
    def produce(self, frame) -> bytes | object | None:
        """The framed answer, NO_RESPONSE (acks=0), or None: the full path."""
        try:
            return self._produce(frame)
        except (_Unread, struct.error, KafkaError):
            return None

    def _produce(self, frame) -> bytes | object | None:
        _key, version, correlation_id = _HEAD.unpack_from(frame, 0)
        if version not in PRODUCE_VERSIONS:
            return None
        flexible = version >= 9
        end = len(frame)
        pos = _header(frame, end, flexible)
        # transactional_id: null only
        if flexible:
            n, pos = _uvarint(frame, pos, end)
            if n != 0:
                return None
        else:
            if pos + 2 > end or _I16.unpack_from(frame, pos)[0] != -1:
                return None
            pos += 2
        if pos + 6 > end:
            return None
        acks = _I16.unpack_from(frame, pos)[0]
        if acks not in (0, 1, -1):
            return None
        pos += 6  # acks, timeout_ms (unused: `append_plain` takes no acks=-1 it must wait for)
        n, pos = _count(frame, pos, end, flexible)
        if n != 1:
            return None
        topic, pos = _string(frame, pos, end, flexible)
        n, pos = _count(frame, pos, end, flexible)
        if n != 1 or pos + 4 > end:
            return None
        index = _I32.unpack_from(frame, pos)[0]
        pos += 4
        size, pos = _count(frame, pos, end, flexible)  # the records' length (-1: null)
        if size < 0 or pos + size > end:
            return None
        records = memoryview(frame)[pos:pos + size]
        pos += size
        if flexible:  # the partition's, the topic's and the request's tagged fields
            for _ in range(3):
                pos = _no_tags(frame, pos, end)
        template = None
        if acks:
            template = produce.answer_template(version, topic, index)
            if template is None:
                return None
        replicas = self.services.replicas
        p = replicas.partitions.get((topic, index))
        if p is None or p.log.config.log_append_time:
            return None
        appended = replicas.append_plain(topic, index, records, acks)
        if appended is None:
            return None
        result, p = appended
        if not acks:
            return NO_RESPONSE
        return template.render(correlation_id, result.base_offset, p.log.log_start_offset)

    # --- Fetch -----------------------------------------------------------------------------
    def fetch_request(self, frame) -> tuple[int, int, FetchPartitionRequest, int, int,
                                             int, int, SessionFetch | None] | None:
        """(version, correlation id, the partition's request, max_bytes, min_bytes,
        max_wait_ms, isolation_level, the session it continues or None) of a frame of the
        shape served here, else None. Nothing is changed: a session moves to its next epoch
        only when the fetch is served (`fetch`, `serve_at_once`)."""
        try:
            return self._fetch_request(frame)
        except (_Unread, struct.error):
            return None

    def _fetch_request(self, frame):
        _key, version, correlation_id = _HEAD.unpack_from(frame, 0)
        if version not in FETCH_VERSIONS:
            return None
        flexible = version >= 12
        end = len(frame)
        pos = _header(frame, end, flexible)
        if version < 15:
            replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level = \
                _FETCH_HEAD.unpack_from(frame, pos)
            pos += _FETCH_HEAD.size
            if replica_id != -1:
                return None
        else:  # the replica's state is a tagged field: none is allowed below
            max_wait_ms, min_bytes, max_bytes, isolation_level = \
                _FETCH_HEAD_15.unpack_from(frame, pos)
            pos += _FETCH_HEAD_15.size
        if isolation_level not in (0, 1):
            return None
        session_id, session_epoch = 0, -1
        if version >= 7:
            session_id, session_epoch = _SESSION.unpack_from(frame, pos)
            pos += _SESSION.size
            if (session_id != 0 or session_epoch != -1) and \
                    (session_id == 0 or session_epoch <= 0):
                return None  # opens or closes a session: the full path
        n, pos = _count(frame, pos, end, flexible)
        if n < 1 and (n != 0 or not session_id):
            return None
        requests: list[FetchPartitionRequest] = []
        keys: list[object] = []  # each request's topic key in a session
        names: set[str] = set()
        for _ in range(n):
            key, pos = self._fetch_topic(frame, pos, end, version, flexible, requests)
            if key is None or requests[-1].topic in names:
                return None  # an unknown topic id, or a topic named twice
            names.add(requests[-1].topic)
            keys += [key] * (len(requests) - len(keys))
        if len(requests) > 1 and len(requests) != len(
                {(r.topic, r.partition) for r in requests}):
            return None  # a partition named twice
        if version >= 7:
            n, pos = _count(frame, pos, end, flexible)  # forgotten_topics_data: none
            if n != 0:
                return None
        if version >= 11:
            _rack, pos = _string(frame, pos, end, flexible)
        if flexible:  # none (a cluster id, a replica's state: the full path)
            pos = _no_tags(frame, pos, end)
        if pos > end:
            return None
        if session_id:
            return self._in_session(version, correlation_id, session_id, session_epoch,
                                    requests, keys, max_bytes, min_bytes, max_wait_ms,
                                    isolation_level)
        return (version, correlation_id, requests, max_bytes, min_bytes, max_wait_ms,
                isolation_level, None)

    def _fetch_topic(self, frame, pos: int, end: int, version: int, flexible: bool,
                     requests: list[FetchPartitionRequest]) -> tuple[object, int]:
        """One topic of a Fetch, its partitions appended to `requests`: (the topic's key in
        a session: its id from v13, else its name; the position after it); (None, pos)
        for an unknown topic id or a topic with no partition."""
        if version >= 13:
            if pos + 16 > end:
                return None, pos
            raw = bytes(frame[pos:pos + 16])
            topic_id = self._topic_ids.get(raw)
            if topic_id is None:
                if len(self._topic_ids) >= MAX_TOPIC_IDS:
                    self._topic_ids.clear()
                topic_id = self._topic_ids[raw] = uuid.UUID(bytes=raw)
            pos += 16
            info = self.services.cache.topic_by_id(topic_id)
            if info is None:
                return None, pos
            topic = info.name
            key = topic_id
        else:
            topic, pos = _string(frame, pos, end, flexible)
            key = topic
        n, pos = _count(frame, pos, end, flexible)
        if n < 1:
            return None, pos
        for _ in range(n):
            if pos + 4 > end:
                raise _Unread
            partition = _I32.unpack_from(frame, pos)[0]
            pos += 4
            leader_epoch = -1
            if version >= 9:
                leader_epoch = _I32.unpack_from(frame, pos)[0]
                pos += 4
            fetch_offset = _I64.unpack_from(frame, pos)[0]
            pos += 8
            if version >= 12:
                pos += 4  # last_fetched_epoch: for followers
            log_start_offset = -1
            if version >= 5:
                log_start_offset = _I64.unpack_from(frame, pos)[0]
                pos += 8
            partition_max_bytes = _I32.unpack_from(frame, pos)[0]
            pos += 4
            if flexible:  # the partition's tagged fields: none
                pos = _no_tags(frame, pos, end)
            requests.append(FetchPartitionRequest(topic, partition, fetch_offset,
                                                  partition_max_bytes, leader_epoch,
                                                  log_start_offset))
        if flexible:  # the topic's tagged fields: none
            pos = _no_tags(frame, pos, end)
        return key, pos

    def _in_session(self, version: int, correlation_id: int, session_id: int, epoch: int,
                    requests: list[FetchPartitionRequest], keys: list[object],
                    max_bytes: int, min_bytes: int, max_wait_ms: int, isolation_level: int
                    ) -> tuple | None:
        """An incremental fetch in a consumer's session, at the epoch the session expects,
        naming partitions of the session (their new positions) or none: what
        `fetch_request` returns, with the session to continue (`SessionFetch`) and no
        partition yet (what is read comes from the session once it has moved on:
        `SessionFetch.reads`; a topic id no longer known is answered UNKNOWN_TOPIC_ID there,
        as the handler answers it). None, the session untouched, for anything else (a
        partition added: the full path; it gives the errors)."""
        by_id = version >= 13
        session = self.services.fetch_sessions.get(session_id)
        if session is None or session.epoch != epoch or session.uses_topic_ids != by_id or \
                session.privileged:
            return None
        cached = session.partitions
        entries = []
        for request, key in zip(requests, keys, strict=True):
            if (key, request.partition) not in cached:
                return None
            entries.append(PartitionRequest(key, request.partition, request.fetch_offset,
                                            request.max_bytes, request.current_leader_epoch,
                                            request.log_start_offset))
        return (version, correlation_id, None, max_bytes, min_bytes, max_wait_ms,
                isolation_level, SessionFetch(self.services.fetch_sessions, session_id, epoch,
                                              entries, by_id))

    async def fetch(self, version: int, correlation_id: int,
                    requests: list[FetchPartitionRequest] | None, max_bytes: int,
                    min_bytes: int, max_wait_ms: int, isolation_level: int,
                    session: SessionFetch | None) -> RawResponse:
        """The answer to a request `fetch_request` read (the handler's)."""
        moved = self._move_on(version, correlation_id, requests, session)
        if isinstance(moved, RawResponse):
            return moved
        context, rows, requests = moved
        results = await self.services.replicas.fetch(requests, max_bytes, min_bytes,
                                                     max_wait_ms, -1, isolation_level)
        return self._answer(version, correlation_id, requests, results, isolation_level,
                            context, rows)

    def _move_on(self, version: int, correlation_id: int,
                 requests: list[FetchPartitionRequest] | None, session: SessionFetch | None
                 ) -> RawResponse | tuple[IncrementalContext | None, tuple | None, list]:
        """A fetch being served: (None, None, `requests`) without a session; in a session,
        the session moved on and (its context, the rows its answer is built from, the
        reads), or the answer to a session it cannot use."""
        if session is None:
            return None, None, requests
        context = session.context()
        if isinstance(context, SessionError):
            return fetch.session_error_response(version, correlation_id, context)
        rows, requests = session.reads(self.services.cache, context)
        return context, rows, requests

    def _answer(self, version: int, correlation_id: int,
                requests: list[FetchPartitionRequest], results: list[FetchPartitionResult],
                isolation_level: int, context: IncrementalContext | None = None,
                rows: tuple | None = None) -> RawResponse:
        if context is not None:
            return self._session_answer(version, correlation_id, results, isolation_level,
                                        context, rows)
        cache = self.services.cache
        if len(requests) > 1:  # the handler's answer: topics and partitions as asked
            topics: list[fetch_response.FetchTopicData] = []
            for request, result in zip(requests, results, strict=True):
                if not topics or topics[-1].name != request.topic:
                    info = cache.topic(request.topic)
                    topics.append(fetch_response.FetchTopicData(
                        request.topic, info.topic_id if info else None, []))
                topics[-1].partitions.append(partition_data(cache, result, isolation_level))
            parts, size = fetch_response.encode(version, correlation_id, 0, ErrorCode.none, 0,
                                                topics)
            return RawResponse(parts, size)
        request, result = requests[0], results[0]
        info = cache.topic(request.topic)
        if result.error is None and not isolation_level:  # the commonest answer
            read = result.read
            parts, size = fetch_response.encode_one(
                version, correlation_id, request.topic, info.topic_id if info else None,
                request.partition, result.high_watermark, result.last_stable_offset,
                result.log_start_offset, read.slice if read and read.slice else b"", 0)
            return RawResponse(parts, size)
        topics = [fetch_response.FetchTopicData(
            request.topic, info.topic_id if info else None,
            [partition_data(cache, result, isolation_level)])]
        parts, size = fetch_response.encode(version, correlation_id, 0, ErrorCode.none, 0,
                                            topics)
        return RawResponse(parts, size)

    def _session_answer(self, version: int, correlation_id: int,
                        results: list[FetchPartitionResult], isolation_level: int,
                        context: IncrementalContext, rows: tuple) -> RawResponse:
        """The handler's answer in a session: the partitions with something new
        (`fetch.session_topics`, given the session's partitions and their names as read,
        `SessionFetch.reads`)."""
        partitions, names = rows
        by_tp = {(r.topic, r.partition): r for r in results}
        topics = fetch.session_topics(self.services.cache, context, partitions, names, by_tp,
                                      _NONE_DENIED, isolation_level, version >= 13)
        if len(partitions) == 1 and len(results) == 1 and topics and \
                not context.error_code and not isolation_level and results[0].error is None:
            result, topic = results[0], topics[0]  # the commonest answer
            read = result.read
            parts, size = fetch_response.encode_one(
                version, correlation_id, topic.name, topic.topic_id, result.partition,
                result.high_watermark, result.last_stable_offset, result.log_start_offset,
                read.slice if read and read.slice else b"", context.session_id)
            return RawResponse(parts, size)
        parts, size = fetch_response.encode(version, correlation_id, 0, context.error_code,
                                            context.session_id, topics)
        return RawResponse(parts, size)

    def serve_at_once(self, read: tuple, answer: Callable[[RawResponse | None], None]
                      ) -> ParkedFetch | RawResponse:
        """A fetch `fetch_request` read, served without a task: its answer when it can be
        given now (data to read, an error, no wait asked for: what `fetch` would answer at
        once), else the fetch parked (`ParkedFetch`: a consumer tailing its partition, or
        short of min_bytes): `answer` is then called with the answer `fetch` would give
        (None after an unexpected error, logged: the connection is to close) by whatever
        wakes the partition's fetches (an append, a high watermark move, a change of
        leader), as it does, or by the max wait's timer. An unexpected error here is
        raised."""
        version, correlation_id, requests, _max_bytes, min_bytes, max_wait_ms, \
            isolation_level, session = read
        moved = self._move_on(version, correlation_id, requests, session)
        if isinstance(moved, RawResponse):
            return moved
        context, rows, requests = moved
        if session is not None:
            read = (version, correlation_id, requests, *read[3:])
        parked = ParkedFetch(self, read, answer, max_wait_ms / 1000, context, rows)
        if min_bytes > 0 and max_wait_ms > 0 and \
                self.services.replicas.all_at_end(requests, isolation_level):
            parked.park(max_wait_ms / 1000)  # nothing to read yet: no read first
            return parked
        response = parked.respond(False)
        return parked if response is None else response


class SessionFetch:
    """An incremental fetch `FastPath.fetch_request` read in a consumer's session:
    `context()` moves the session on as the handler does (its next epoch, the named
    partitions' new positions) and gives the context its answer is built with; `reads`
    what is then read, as the handler reads it."""

    __slots__ = ("sessions", "session_id", "epoch", "entries", "by_id")

    def __init__(self, sessions: FetchSessionCache, session_id: int, epoch: int,
                 entries: list[PartitionRequest], by_id: bool) -> None:
        self.sessions = sessions
        self.session_id = session_id
        self.epoch = epoch
        self.entries = entries
        self.by_id = by_id

    def context(self) -> IncrementalContext | SessionError:
        context = self.sessions.new_context(self.session_id, self.epoch, False, self.by_id,
                                            self.entries, [])
        if not isinstance(context, IncrementalContext | SessionError):  # the session emptied
            raise RuntimeError(f"fetch session {self.session_id} has no partition left")
        return context

    def reads(self, cache, context: IncrementalContext
              ) -> tuple[tuple[list, list], list[FetchPartitionRequest]]:
        """((the session's partitions in fetch order, their topic names), the reads):
        `fetch.session_reads`, with no authorizer."""
        partitions, names, wanted, _denied = fetch.session_reads(cache, context, self.by_id)
        return (partitions, names), wanted


class ParkedFetch:
    """A consumer's fetch served by `FastPath.serve_at_once` that waits for data: woken, it
    reads as `ReplicaManager._fetch` does (parked again while short of min_bytes with time
    left), then answers once. `cancel()` unparks it without an answer (the connection
    closed)."""

    __slots__ = ("fast_path", "read", "answer", "context", "rows", "deadline", "parked",
                 "_loop")

    def __init__(self, fast_path: FastPath, read: tuple,
                 answer: Callable[[RawResponse | None], None], timeout_s: float,
                 context: IncrementalContext | None = None, rows: tuple | None = None
                 ) -> None:
        self.fast_path = fast_path
        self.read = read
        self.answer = answer
        self.context = context
        self.rows = rows
        self._loop = fast_path.services.replicas.loop()
        self.deadline = self._loop.time() + timeout_s
        self.parked: ParkedCall | None = None

    def park(self, timeout_s: float) -> None:
        self.parked = self.fast_path.services.replicas.park(
            tuple((r.topic, r.partition) for r in self.read[2]), timeout_s, self._woken)

    def respond(self, expired: bool) -> RawResponse | None:
        """Read; the answer, or None when parked again (short of min_bytes, time left)."""
        version, correlation_id, requests, max_bytes, min_bytes, _wait, isolation_level, \
            _session = self.read
        replicas = self.fast_path.services.replicas
        results = replicas.read_all(requests, max_bytes, -1, isolation_level)
        if not expired and requests and sum(r.size for r in results) < min_bytes and \
                not any(r.error for r in results):
            timeout_s = self.deadline - self._loop.time()
            if timeout_s > 0:
                self.park(timeout_s)
                return None
        if replicas.stats.enabled:
            replicas.count_fetch(results, -1)
        return self.fast_path._answer(version, correlation_id, requests, results,
                                      isolation_level, self.context, self.rows)

    def _woken(self, expired: bool) -> None:
        self.parked = None
        try:
            response = self.respond(expired)
            if response is None:
                return  # parked again
        except Exception:  # as the dispatcher treats a handler's: logged, connection closed
            log.exception("Unexpected error handling a parked Fetch v%d (correlation id %d)",
                          self.read[0], self.read[1])
            response = None
        self.answer(response)

    def cancel(self) -> None:
        parked, self.parked = self.parked, None
        if parked is not None:
            parked.cancel()
