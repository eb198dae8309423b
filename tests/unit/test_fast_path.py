"""strom.api.fast_path: the commonest Produce and Fetch requests, read straight from the
frame, get exactly the answer the full path (kio's parse and the handlers) gives; any other
frame, and any strict prefix or mutation of one that the fast path cannot read, goes to the
full path.

Produce frames are compared in lockstep: two brokers with the same topic, one with the fast
path and one without, get the same frames in the same order, so their answers (offsets
included) must be equal byte for byte, or both must close the connection. Fetch frames,
which change nothing, are compared on one broker with the fast path on and off."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import socket
import struct
import time
import uuid

import pytest

from strom.api import fast_path
from strom.api.fetch import RawResponse
from strom.cluster.controller import NewTopic
from strom.config import BrokerConfig
from strom.log.records import NewRecord, build_batch
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import (
    encode_request,
    make,
    parse_response,
    request_module,
    request_schema,
)
from strom.server.broker import Broker
from strom.server.dispatcher import CloseConnection

TOPIC = "fast"
PRODUCE_VERSIONS = range(3, 13)
FETCH_VERSIONS = range(4, 18)


def produce_frame(version: int, correlation_id: int, *, topic: str = TOPIC, partition: int = 0,
                  acks: int = 1, records: bytes | None = None, client_id: str = "rdkafka",
                  transactional_id: str | None = None, partitions: int = 1) -> bytes:
    mod = request_module(0, version)
    if records is None:
        records = build_batch([NewRecord(b"v%d" % correlation_id,
                                         timestamp=int(time.time() * 1000))])
    data = tuple(make(mod.PartitionProduceData, index=partition + i, records=records)
                 for i in range(partitions))
    req = make(request_schema(0, version), transactional_id=transactional_id, acks=acks,
               timeout=datetime.timedelta(seconds=30), topic_data=(make(
                   mod.TopicProduceData, name=topic, partition_data=data),))
    return encode_request(correlation_id, client_id, req)[4:]


def fetch_frame(version: int, correlation_id: int, offset: int, topic_id=None, *,
                topic: str = TOPIC, partition: int = 0, replica_id: int = -1,
                session_id: int = 0, session_epoch: int = -1, max_wait_ms: int = 0,
                isolation_level: int = 0, forgotten: bool = False, min_bytes: int = 1,
                no_partition: bool = False, partitions: tuple[int, ...] | None = None,
                more_topics: tuple = ()) -> bytes:
    """One topic's `partition` (or `partitions`, all at `offset`), then `more_topics`:
    (name, topic id, partitions) each."""
    mod = request_module(1, version)

    def parts(indexes):
        return tuple(make(mod.FetchPartition, partition=i, current_leader_epoch=-1,
                          fetch_offset=offset, last_fetched_epoch=-1, log_start_offset=-1,
                          partition_max_bytes=1 << 20) for i in indexes)
    forgotten_topics = (make(mod.ForgottenTopic, topic=topic, topic_id=topic_id,
                             partitions=(1,)),) if forgotten else ()
    req = make(request_schema(1, version), replica_id=replica_id,
               max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes,
               max_bytes=52428800, isolation_level=isolation_level, session_id=session_id,
               session_epoch=session_epoch, rack_id="", forgotten_topics_data=forgotten_topics,
               topics=() if no_partition else tuple(
                   make(mod.FetchTopic, topic=name, topic_id=tid, partitions=parts(indexes))
                   for name, tid, indexes in ((topic, topic_id, partitions or (partition,)),
                                              *more_topics)))
    return encode_request(correlation_id, "rdkafka", req)[4:]


async def start_broker(tmp_path, name: str, *settings: str) -> Broker:
    config = BrokerConfig.load(None, [f"log.dirs={tmp_path / name}",
                                      "listeners=PLAINTEXT://127.0.0.1:0", *settings])
    broker = Broker(config)
    await broker.startup()
    for topic, configs in ((TOPIC, {}), ("compacted", {"cleanup.policy": "compact"}),
                           ("append-time", {"message.timestamp.type": "LogAppendTime"})):
        await broker.controller.create_topic(NewTopic(topic, 2, 1, configs=configs))
    deadline = time.monotonic() + 10
    while len(broker.replicas.partitions) < 6:
        assert time.monotonic() < deadline, "the topics have no leader"
        await asyncio.sleep(0.01)
    return broker


async def answer(broker: Broker, frame: bytes, fast: bool):
    """What the connection would write: bytes, None (no answer), or "closed"."""
    dispatcher = broker.dispatcher
    saved = dispatcher.fast_path
    if not fast:
        dispatcher.fast_path = None
    try:
        response = await asyncio.wait_for(
            dispatcher.dispatch(frame, "127.0.0.1:1", "/127.0.0.1", "PLAINTEXT"), 2)
    except CloseConnection:
        return "closed"
    except TimeoutError:
        return "parked"
    finally:
        dispatcher.fast_path = saved
    if isinstance(response, RawResponse):
        return b"".join(p if isinstance(p, bytes) else p.read() for p in response.parts)
    return response


def _body_start(frame: bytes) -> int:
    """Where a request's body starts: after the header's client id (and, in a flexible
    version, one byte of empty tagged fields, as encode_request writes them)."""
    client_id_length = int.from_bytes(frame[8:10], "big")
    flexible = frame[1] == 1 and frame[3] >= 12
    return 10 + client_id_length + (1 if flexible else 0)


def run(coro):
    return asyncio.run(coro)


def produce_frames() -> list[bytes]:
    """Every served version, acks 0, 1 and -1, a few client ids; and shapes the fast path
    leaves to the full path."""
    frames = []
    cid = 0
    for version in PRODUCE_VERSIONS:
        for acks in (1, 1, 0, 1, -1):
            cid += 1
            frames.append(produce_frame(version, cid, acks=acks, partition=cid % 2))
        cid += 1
        frames.append(produce_frame(version, cid, client_id=""))
        cid += 1
        frames.append(produce_frame(version, cid, client_id="\u00e9t\u00e9"))
    cid += 1
    for kwargs in ({"acks": -2}, {"acks": 2}, {"partitions": 2}, {"topic": "missing"},
                   {"partition": 7}, {"topic": "__consumer_offsets"},
                   {"topic": "compacted"}, {"records": b""},
                   {"records": b"\0" * 70}, {"transactional_id": "tx"}):
        for version in (3, 8, 9, 12):
            cid += 1
            frames.append(produce_frame(version, cid, **kwargs))
    return frames


def test_produce_answers_equal_the_full_path_in_lockstep(tmp_path):
    async def go():
        fast_broker = await start_broker(tmp_path, "a")
        full_broker = await start_broker(tmp_path, "b")
        taken = 0
        try:
            for frame in produce_frames():
                a = await answer(fast_broker, frame, fast=True)
                b = await answer(full_broker, frame, fast=False)
                assert a == b, frame.hex()
            for (topic, index), p in fast_broker.replicas.partitions.items():
                q = full_broker.replicas.partitions[(topic, index)]
                assert p.log.log_end_offset == q.log.log_end_offset, (topic, index)
                taken += p.log.log_end_offset
        finally:
            await fast_broker.shutdown()
            await full_broker.shutdown()
        return taken

    assert run(go()) > 0


def _tagged(frame: bytes, at: int, fields: bytes) -> bytes:
    """`frame` with the empty tagged-field section at `at` replaced by `fields`."""
    assert frame[at] == 0
    return frame[:at] + fields + frame[at + 1:]


def _client_id_length(frame: bytes, length: int) -> bytes:
    """`frame` whose client id is replaced by a bare length (no bytes after it)."""
    return frame[:8] + struct.pack(">h", length) + frame[10 + int.from_bytes(frame[8:10],
                                                                               "big"):]


def test_tagged_fields_and_bad_client_id_lengths_go_to_the_full_path(tmp_path):
    """A tagged field anywhere in the frame (the full path skips tags the version does not
    know, as Kafka does, and checks the size of those it knows) and a client id length
    below -1 (which kio refuses) are the full path's: the fast path reads neither, so both
    paths answer alike: unknown tags are answered as without them (a Produce appended on
    both brokers), a known tag of the wrong size and a bad client id length close the
    connection."""
    unknown = b"\x01\x07\x00"  # one field, tag 7, empty

    def header_tags(frame):  # after the client id
        return 10 + int.from_bytes(frame[8:10], "big")

    def cases(topic_id):
        for version in (9, 12):  # Produce: partition, topic, request tags are the last 3
            frame = produce_frame(version, 500 + version)
            yield frame, header_tags(frame), unknown
            for at in (-3, -2, -1):
                yield frame, len(frame) + at, unknown
        for version in (12, 16, 17):  # Fetch: ... partition, topic tags, forgotten, rack,
            frame = fetch_frame(version, 600 + version, 0,  # request tags
                                topic_id if version >= 13 else None)
            yield frame, header_tags(frame), unknown
            for at in (-5, -4, -1):
                yield frame, len(frame) + at, unknown
            if version == 17:  # tag 0 of a partition: replica_directory_id, 16 bytes
                for size in (0, 4, 16, 20):
                    yield frame, len(frame) - 5, b"\x01\x00" + bytes([size]) + b"u" * size

    async def go():
        fast_broker = await start_broker(tmp_path, "a")
        full_broker = await start_broker(tmp_path, "b")
        fast = fast_broker.dispatcher.fast_path
        topic_id = fast_broker.cache.topic(TOPIC).topic_id
        try:
            for broker in (fast_broker, full_broker):  # the answer templates
                for version in (8, 9, 12):
                    await answer(broker, produce_frame(version, 1), fast=False)
            frames = [_tagged(frame, at, fields) for frame, at, fields in cases(topic_id)]
            for version in (8, 9):
                frames += [_client_id_length(produce_frame(version, 700), n)
                           for n in (-2, -32768)]
            for version in (4, 12):
                frames += [_client_id_length(fetch_frame(version, 800, 0), n)
                           for n in (-2, -32768)]
            closed = answered = 0
            for frame in frames:
                if frame[1] == 1:  # Fetch
                    assert fast.fetch_request(frame) is None, frame.hex()
                    a = await answer(fast_broker, frame, fast=True)
                    b = await answer(fast_broker, frame, fast=False)
                else:
                    a = await answer(fast_broker, frame, fast=True)
                    b = await answer(full_broker, frame, fast=False)
                assert a == b, frame.hex()
                closed += a == "closed"
                answered += isinstance(a, bytes) and a[4:8] == frame[4:8]
            ends = {}
            for (topic, index), p in fast_broker.replicas.partitions.items():
                q = full_broker.replicas.partitions[(topic, index)]
                assert p.log.log_end_offset == q.log.log_end_offset, (topic, index)
                ends[(topic, index)] = p.log.log_end_offset
        finally:
            await fast_broker.shutdown()
            await full_broker.shutdown()
        return closed, answered, ends[(TOPIC, 0)]

    closed, answered, end = run(go())
    # closed: a replica_directory_id of 0, 4 or 20 bytes, the 8 bad client id lengths;
    # answered: the 20 frames with an unknown tag and the 16-byte replica_directory_id
    assert (closed, answered) == (11, 21)
    assert end == 3 + 8  # the 3 answer templates' Produces and the 8 with an unknown tag


def test_the_common_produce_shapes_take_the_fast_path(tmp_path):
    async def go():
        broker = await start_broker(tmp_path, "a")
        fast = broker.dispatcher.fast_path
        try:
            taken = []
            for version in PRODUCE_VERSIONS:
                await answer(broker, produce_frame(version, 1), fast=False)  # the template
                for acks in (0, 1, -1):
                    answered = fast.produce(produce_frame(version, 2, acks=acks)) is not None
                    # v3 and v4 answers have no log start offset: no template to patch
                    taken.append(answered == (acks == 0 or version >= 5))
            refused = [fast.produce(produce_frame(9, 3, **kwargs)) for kwargs in (
                {"acks": 2}, {"partitions": 2}, {"transactional_id": "tx"},
                {"topic": "compacted"}, {"topic": "append-time"}, {"topic": "missing"})]
            # acks=-1 where another replica is in the ISR: the full path waits for it
            p = broker.replicas.partitions[(TOPIC, 0)]
            end, isr = p.log.log_end_offset, p.isr
            p.isr = (*isr, 99)
            try:
                refused.append(fast.produce(produce_frame(9, 4, acks=-1)))
            finally:
                p.isr = isr
            return taken, refused, p.log.log_end_offset - end
        finally:
            await broker.shutdown()

    taken, refused, appended = run(go())
    assert all(taken)
    assert refused == [None] * len(refused)
    assert appended == 0


def test_fetch_answers_equal_the_full_path(tmp_path):
    async def go():
        broker = await start_broker(tmp_path, "a")
        fast = broker.dispatcher.fast_path
        topic_id = broker.cache.topic(TOPIC).topic_id
        ids = {name: broker.cache.topic(name).topic_id for name in (TOPIC, "append-time")}
        try:
            for i in range(5):
                await answer(broker, produce_frame(9, i), fast=True)
                await answer(broker, produce_frame(9, 20 + i, partition=1), fast=True)
                await answer(broker, produce_frame(9, 40 + i, topic="append-time",
                                                   partition=i % 2), fast=False)
            frames, expect_fast = [], []
            for version in FETCH_VERSIONS:
                tid = topic_id if version >= 13 else None
                for offset in (0, 3, 5, 99):  # from the start, the middle, the end, past it
                    frames.append(fetch_frame(version, offset + 1, offset, tid))
                    expect_fast.append(True)
                frames.append(fetch_frame(version, 7, 0, tid, isolation_level=1))
                expect_fast.append(True)
                frames.append(fetch_frame(version, 8, 0, tid, partition=5))
                expect_fast.append(True)
                # several partitions, in any order, of one topic or more
                other = ("append-time", ids["append-time"] if version >= 13 else None, (1, 0))
                for kwargs in ({"partitions": (0, 1)}, {"partitions": (1, 0)},
                               {"partitions": (0, 1, 5)}, {"more_topics": (other,)}):
                    for offset in (0, 3):
                        frames.append(fetch_frame(version, 12, offset, tid, **kwargs))
                        expect_fast.append(True)
                # a partition or a topic named twice: the full path
                for kwargs in ({"partitions": (0, 0)},
                               {"more_topics": ((TOPIC, tid, (1,)),)}):
                    frames.append(fetch_frame(version, 13, 0, tid, **kwargs))
                    expect_fast.append(False)
                others = [{"replica_id": 2}] if version < 15 else []
                if version >= 7:
                    others += [{"session_epoch": 0}, {"session_id": 5, "session_epoch": 1},
                               {"forgotten": True}]
                for kwargs in others:
                    frames.append(fetch_frame(version, 9, 0, tid, **kwargs))
                    expect_fast.append(False)
            if True:  # an unknown topic id (v13+) and an unknown topic name
                frames.append(fetch_frame(13, 10, 0, uuid.uuid4()))
                expect_fast.append(False)
                frames.append(fetch_frame(12, 11, 0, topic="missing"))
                expect_fast.append(True)
            results = []
            for frame, expected in zip(frames, expect_fast, strict=True):
                assert (fast.fetch_request(frame) is not None) == expected, frame.hex()
                if not expected:
                    continue  # the full path both times (and a session opened each time)
                results.append((frame, await answer(broker, frame, fast=True),
                                await answer(broker, frame, fast=False)))
            return results
        finally:
            await broker.shutdown()

    for frame, a, b in run(go()):
        assert a == b, frame.hex()


def test_a_tailing_fetch_parks_on_the_fast_path_and_is_answered(tmp_path):
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            parked = asyncio.ensure_future(broker.dispatcher.dispatch(
                fetch_frame(12, 1, end, max_wait_ms=30_000), "c", "/c", "PLAINTEXT"))
            await asyncio.sleep(0.05)
            assert not parked.done()
            await answer(broker, produce_frame(9, 2), fast=True)
            response = await asyncio.wait_for(parked, 5)
            return response.size
        finally:
            await broker.shutdown()

    assert run(go()) > 100


def test_every_prefix_and_many_mutations_agree_with_the_full_path(tmp_path):
    """A frame cut short anywhere is never read by the fast path; a mutated frame is either
    left to the full path or answered as the full path answers it."""
    rng = random.Random(17)

    async def go():
        fast_broker = await start_broker(tmp_path, "a")
        full_broker = await start_broker(tmp_path, "b")
        fast = fast_broker.dispatcher.fast_path
        try:
            for version in PRODUCE_VERSIONS:  # the answer templates
                frame = produce_frame(version, 0)
                for broker in (fast_broker, full_broker):
                    await answer(broker, frame, fast=False)
            bases = [produce_frame(v, 1) for v in (3, 8, 9, 12)]
            fetches = [fetch_frame(v, 1, 0) for v in (4, 7, 11, 12)] + [
                fetch_frame(v, 1, 0, partitions=(1, 0), more_topics=(("append-time", None,
                                                                       (0,)),))
                for v in (4, 12)]
            for frame in bases:
                for cut in range(len(frame)):
                    assert fast.produce(frame[:cut]) is None, (cut, frame.hex())
            for frame in fetches:
                for cut in range(len(frame)):
                    assert fast.fetch_request(frame[:cut]) is None, (cut, frame.hex())
            # by topic id, and incremental fetches in open sessions (reading them changes
            # nothing: every prefix is read against the same session)
            topic_id = fast_broker.cache.topic(TOPIC).topic_id
            whole = [fetch_frame(13, 1, 0, topic_id), fetch_frame(16, 1, 0, topic_id)]
            for v, tid in ((12, None), (16, topic_id)):
                opened = await answer(fast_broker, fetch_frame(v, 1, 0, tid, session_epoch=0),
                                      fast=False)
                sid = parse_response(1, v, opened[4:]).session_id
                whole += [fetch_frame(v, 1, 3, tid, session_id=sid, session_epoch=1),
                          fetch_frame(v, 1, 0, tid, session_id=sid, session_epoch=1,
                                      no_partition=True)]
                opened = await answer(fast_broker, fetch_frame(
                    v, 1, 0, tid, session_epoch=0, partitions=(0, 1)), fast=False)
                sid = parse_response(1, v, opened[4:]).session_id  # of two partitions
                whole += [fetch_frame(v, 1, 3, tid, session_id=sid, session_epoch=1,
                                      partitions=(1, 0)),
                          fetch_frame(v, 1, 3, tid, session_id=sid, session_epoch=1,
                                      partition=1)]
            for frame in whole:
                assert fast.fetch_request(frame) is not None, frame.hex()
                for cut in range(len(frame)):
                    assert fast.fetch_request(frame[:cut]) is None, (cut, frame.hex())
            # a fetch's max_wait_ms (after the header and replica_id) stays 0: it never
            # parks, so every answer comes at once
            keep = {frame: range(_body_start(frame) + 4, _body_start(frame) + 8)
                    for frame in fetches}
            answered = []  # mutated frames the fast path read (not only refused)
            produce_, fetch_request = fast.produce, fast.fetch_request
            fast.produce = lambda f: answered.append(produce_(f)) or answered[-1]
            fast.fetch_request = lambda f: answered.append(fetch_request(f)) or answered[-1]
            mismatches = []
            # incremental fetches in a session both brokers hold (the same id drawn), at
            # the epoch it expects when the frame is made
            for broker in (fast_broker, full_broker):
                broker.fetch_sessions._rng = random.Random(3)
            session_ids = {(0,): 0, (0, 1): 0}  # sessions of one and of two partitions
            for i in range(1500):
                base = rng.choice(bases + fetches + ["in a session"] * 3)
                if base == "in a session":
                    shape = rng.choice(list(session_ids))
                    session = fast_broker.fetch_sessions.get(session_ids[shape])
                    if session is None or sorted(session.partitions) != [
                            (TOPIC, p) for p in shape]:
                        # (re)opened on both: gone, or a mutated frame changed it
                        for broker in (fast_broker, full_broker):
                            opened = await answer(broker, fetch_frame(
                                12, 1, 0, session_id=session_ids[shape], session_epoch=0,
                                partitions=shape), fast=False)
                        session_ids[shape] = parse_response(1, 12, opened[4:]).session_id
                        session = fast_broker.fetch_sessions.get(session_ids[shape])
                    named = rng.choice([(), (0,), (1,), (0, 1), (1, 0)] if len(shape) > 1
                                       else [(), (0,)])
                    base = fetch_frame(12, 2, rng.choice((0, 3)),
                                       session_id=session_ids[shape],
                                       session_epoch=session.epoch, no_partition=not named,
                                       partitions=named or None)
                    assert fast.fetch_request(base) is not None
                    keep[base] = range(_body_start(base) + 4, _body_start(base) + 8)
                frame = bytearray(base)
                for _ in range(rng.randint(1, 3)):
                    at = rng.randrange(8, len(frame))
                    if at not in keep.get(base, ()):
                        frame[at] = rng.randrange(256)
                frame = bytes(frame)
                a = await answer(fast_broker, frame, fast=True)
                b = await answer(full_broker, frame, fast=False)
                if a != b:
                    mismatches.append((i, frame.hex(), a, b))
                    break
            return mismatches, sum(a is not None for a in answered)
        finally:
            await fast_broker.shutdown()
            await full_broker.shutdown()

    mismatches, answered = run(go())
    assert mismatches == []
    assert answered > 100  # the comparison is not only of refusals


@pytest.mark.parametrize("setting", ["authorizer", "quota"])
def test_no_fast_path_with_an_authorizer_or_quotas(tmp_path, setting):
    async def go():
        settings = {"authorizer": ("authorizer.class.name=kafka.security.authorizer."
                                   "AclAuthorizer", "allow.everyone.if.no.acl.found=true"),
                    "quota": ()}[setting]
        broker = await start_broker(tmp_path, "a", *settings)
        try:
            if setting == "quota":
                broker.dispatcher.services.quotas.quotas = {
                    (None, "someone"): {"producer_byte_rate": 1e9}}
            fast = broker.dispatcher.fast_path
            return fast is None or not fast.applies()
        finally:
            await broker.shutdown()

    assert run(go())


def test_record_errors_are_answered_at_every_produce_version(tmp_path):
    """A keyless record on a compacted topic is INVALID_RECORD at every version; before
    v8 (no record_errors in the answer) it closed the connection."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            codes = {}
            for version in PRODUCE_VERSIONS:
                response = await answer(broker, produce_frame(version, 1, topic="compacted"),
                                        fast=True)
                assert isinstance(response, bytes), version
                body = parse_response(0, version, response[4:])
                codes[version] = body.responses[0].partition_responses[0].error_code
            return codes
        finally:
            await broker.shutdown()

    assert set(run(go()).values()) == {ErrorCode.invalid_record}


async def _answers(broker: Broker, frames: list[bytes], count: int,
                   timeout: float = 5) -> list[bytes]:
    """Send `frames` in one write on a new connection; the first `count` responses
    (without their size)."""
    port = broker.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(len(f).to_bytes(4, "big") + f for f in frames))
        out = []
        for _ in range(count):
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), timeout),
                                  "big")
            out.append(await reader.readexactly(size))
        return out
    finally:
        writer.close()


async def _exchange(broker: Broker, frames: list[bytes], answers: int) -> list[int]:
    """Send `frames` in one write on one connection; the correlation ids of the first
    `answers` responses, in the order they come."""
    return [int.from_bytes(body[:4], "big") for body in await _answers(broker, frames, answers)]


def test_produces_answered_on_arrival_keep_the_order_of_answers(tmp_path):
    """Produces answered as they arrive (Connection._answer_at_once) never overtake a
    request before them: a parked Fetch's answer comes before the Produce sent after it on
    the same connection, and the Produce that wakes it comes from another connection."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            await answer(broker, produce_frame(9, 0), fast=False)  # the answer template
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            in_a_row = await _exchange(broker, [
                produce_frame(9, 1), produce_frame(9, 2, acks=0), fetch_frame(12, 3, 0),
                produce_frame(9, 4), produce_frame(9, 5, partition=1)], 4)
            parked = asyncio.ensure_future(_exchange(broker, [
                fetch_frame(12, 6, end + 3, max_wait_ms=30_000), produce_frame(9, 7)], 2))
            await asyncio.sleep(0.2)
            assert not parked.done()
            await _exchange(broker, [produce_frame(9, 8)], 1)  # wakes the parked fetch
            return in_a_row, await asyncio.wait_for(parked, 5), \
                broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset - end
        finally:
            await broker.shutdown()

    in_a_row, after_parked, appended = run(go())
    assert in_a_row == [1, 3, 4, 5]  # acks=0 (2) has no answer
    assert after_parked == [6, 7]
    assert appended == 5  # 1, 2, 4, 7, 8 on partition 0


def test_with_metrics_on_the_fast_path_counts_what_the_full_path_counts(tmp_path):
    """Requests by API and version, their timings, and the topic's messages, bytes and
    requests in and out: the same on two brokers in lockstep, one with the fast path."""
    metrics = "metrics.listener=http://127.0.0.1:0"

    async def go():
        fast_broker = await start_broker(tmp_path, "a", metrics)
        full_broker = await start_broker(tmp_path, "b", metrics)
        try:
            frames = [produce_frame(version, i, acks=acks)
                      for i, (version, acks) in enumerate(
                          (v, a) for v in PRODUCE_VERSIONS for a in (1, 1, 0))]
            frames += [produce_frame(9, 99, topic="missing"), produce_frame(9, 98, acks=-1)]
            frames += [fetch_frame(v, 200 + v, offset) for v in range(4, 13)
                       for offset in (0, 5)]
            answered = 0
            for frame in frames:
                a = await answer(fast_broker, frame, fast=True)
                b = await answer(full_broker, frame, fast=False)
                assert a == b, frame.hex()
            # as the connection answers a Produce on arrival
            for i in range(3):
                frame = produce_frame(9, 300 + i)
                answered += fast_broker.dispatcher.produce_at_once(frame) is not None
                await answer(full_broker, frame, fast=False)
            figures = []
            for broker in (fast_broker, full_broker):
                stats = broker.dispatcher.stats
                totals = broker.replicas.stats.totals()
                figures.append((
                    stats.requests,
                    {a.name: a.latency.count for a in stats.apis.values()},
                    stats.fetch_consumer.count, stats.fetch_follower.count,
                    {name: getattr(totals, name) for name in totals.FIELDS}))
            return answered, figures
        finally:
            await fast_broker.shutdown()
            await full_broker.shutdown()

    answered, (fast_figures, full_figures) = run(go())
    assert answered == 3
    assert fast_figures[0] == full_figures[0] and fast_figures[1:] == full_figures[1:]
    assert fast_figures[4]["messages_in"] > 0 and fast_figures[2] > 0


def _count_parked(broker: Broker) -> list:
    """The Fetches the connections park as they arrive (Dispatcher.fetch_at_once)."""
    dispatcher = broker.dispatcher
    parked = []
    fetch_at_once = dispatcher.fetch_at_once

    def counting(frame, answer_):
        result = fetch_at_once(frame, answer_)
        if isinstance(result, fast_path.ParkedFetch):
            parked.append(int.from_bytes(frame[4:8], "big"))
        return result
    dispatcher.fetch_at_once = counting
    return parked


async def _send(broker: Broker, frame: bytes):
    """A new connection with `frame` sent on it: (reader, writer)."""
    port = broker.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(len(frame).to_bytes(4, "big") + frame)
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("version", [4, 11, 12, 13, 17])
def test_a_tailing_fetch_parked_as_it_arrives_gets_the_full_paths_answer(tmp_path, version):
    """Woken by a Produce on another connection, or at its max wait with nothing new: the
    answer is byte for byte the one the full path gives for the same fetch."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            parked = _count_parked(broker)
            await answer(broker, produce_frame(9, 0), fast=False)
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            topic_id = broker.cache.topic(TOPIC).topic_id if version >= 13 else None
            waiting = asyncio.ensure_future(_answers(broker, [
                fetch_frame(version, 1, end, topic_id, max_wait_ms=30_000)], 1))
            await asyncio.sleep(0.2)
            assert not waiting.done() and parked == [1]
            await _answers(broker, [produce_frame(9, 2)], 1)
            (woken,) = await asyncio.wait_for(waiting, 5)
            full = await answer(broker, fetch_frame(version, 1, end, topic_id), fast=False)
            # nothing new: answered at its max wait
            (expired,) = await _answers(broker, [
                fetch_frame(version, 3, end + 1, topic_id, max_wait_ms=100)], 1)
            full_expired = await answer(broker, fetch_frame(version, 3, end + 1, topic_id),
                                        fast=False)
            return parked, woken, full[4:], expired, full_expired[4:], \
                dict(broker.replicas._waiters)
        finally:
            await broker.shutdown()

    parked, woken, full, expired, full_expired, waiters = run(go())
    assert parked == [1, 3]
    assert woken == full and b"v2" in woken
    assert expired == full_expired
    assert waiters == {}


def test_a_parked_fetch_short_of_min_bytes_parks_again_until_its_max_wait(tmp_path):
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            parked = _count_parked(broker)
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            frame = fetch_frame(12, 1, end, max_wait_ms=600, min_bytes=1 << 20)
            waiting = asyncio.ensure_future(_answers(broker, [frame], 1))
            await asyncio.sleep(0.1)
            await _answers(broker, [produce_frame(9, 2)], 1)  # wakes it: too little
            await asyncio.sleep(0.1)
            early = waiting.done()
            (response,) = await asyncio.wait_for(waiting, 5)
            full = await answer(broker, fetch_frame(12, 1, end), fast=False)
            return parked, early, response, full[4:]
        finally:
            await broker.shutdown()

    parked, early, response, full = run(go())
    assert parked == [1] and not early
    assert response == full and b"v2" in response


def test_a_client_that_leaves_while_its_fetch_is_parked_leaves_no_waiter(tmp_path):
    """A reset connection unparks its fetch at once (a half-closed one is still answered,
    as a fetch parked by the serving task is: see the ordering test above)."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            parked = _count_parked(broker)
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            _reader, writer = await _send(broker, fetch_frame(12, 1, end, max_wait_ms=60_000))
            deadline = time.monotonic() + 5
            while not broker.replicas._waiters and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            while_parked = {k: len(v) for k, v in broker.replicas._waiters.items()}
            sock = writer.get_extra_info("socket")  # closed with a reset, not a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            while broker.replicas._waiters and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            after = dict(broker.replicas._waiters)
            # the partition still serves: a Produce and a fetch after it
            await _answers(broker, [produce_frame(9, 2)], 1)
            (response,) = await _answers(broker, [fetch_frame(12, 3, end)], 1)
            return parked, while_parked, after, response
        finally:
            await broker.shutdown()

    parked, while_parked, after, response = run(go())
    assert parked == [1]
    assert while_parked == {(TOPIC, 0): 1}
    assert after == {}
    assert b"v2" in response


def test_an_unexpected_error_answering_a_parked_fetch_closes_only_its_connection(
        tmp_path, caplog):
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            reader, writer = await _send(broker, fetch_frame(12, 1, end, max_wait_ms=60_000))
            await asyncio.sleep(0.2)
            read_all = broker.replicas.read_all

            def broken(*args, **kwargs):
                raise RuntimeError("a bug")
            broker.replicas.read_all = broken
            try:
                await _answers(broker, [produce_frame(9, 2)], 1)
                closed = await asyncio.wait_for(reader.read(), 5)
            finally:
                broker.replicas.read_all = read_all
                writer.close()
            (response,) = await _answers(broker, [fetch_frame(12, 3, end)], 1)
            return closed, response
        finally:
            await broker.shutdown()

    closed, response = run(go())
    assert closed == b""
    assert b"v2" in response
    assert "Unexpected error handling a parked Fetch" in caplog.text


def test_with_metrics_on_a_fetch_served_as_it_arrives_is_counted(tmp_path):
    """Parked and woken, or answered there and then: each is counted once."""
    async def go():
        broker = await start_broker(tmp_path, "a", "metrics.listener=http://127.0.0.1:0")
        try:
            parked, now = _count_at_once(broker)
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            waiting = asyncio.ensure_future(_answers(broker, [
                fetch_frame(12, 1, end, max_wait_ms=30_000)], 1))
            await asyncio.sleep(0.2)
            await _answers(broker, [produce_frame(9, 2)], 1)
            await asyncio.wait_for(waiting, 5)
            await _answers(broker, [fetch_frame(12, 2, end, max_wait_ms=30_000)], 1)
            stats = broker.dispatcher.stats
            totals = broker.replicas.stats.totals()
            return parked, now, stats.fetch_consumer.count, stats.apis[1].versions[12], \
                totals.fetch_requests, totals.bytes_out
        finally:
            await broker.shutdown()

    parked, now, timed, counted, fetch_requests, bytes_out = run(go())
    assert parked == [1] and now == [2]
    assert timed == 2 and counted == 2 and fetch_requests == 2 and bytes_out > 0


def test_a_parked_fetch_with_a_large_answer_is_written_by_a_task_and_closes_its_fds(
        tmp_path, monkeypatch):
    """A slice of 64 KiB or more is not read on the spot: its descriptor is duplicated at
    once and the answer written by a task (sendfile), the same bytes as the full path's;
    no duplicate is left open."""
    from strom.server.connection import Connection
    written_later = []
    respond_later = Connection._respond_later

    async def counting(self, parts, fds):
        written_later.append(len(parts))
        await respond_later(self, parts, fds)
    monkeypatch.setattr(Connection, "_respond_later", counting)

    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            parked = _count_parked(broker)
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            open_fds = len(os.listdir("/proc/self/fd"))
            waiting = asyncio.ensure_future(_answers(broker, [
                fetch_frame(12, 1, end, max_wait_ms=30_000)], 1))
            await asyncio.sleep(0.2)
            big = build_batch([NewRecord(os.urandom(100_000),
                                         timestamp=int(time.time() * 1000))])
            await _answers(broker, [produce_frame(9, 2, records=big)], 1)
            (response,) = await asyncio.wait_for(waiting, 5)
            await asyncio.sleep(0.1)  # the serving task of the closed connection ends
            left_open = len(os.listdir("/proc/self/fd")) - open_fds
            full = await answer(broker, fetch_frame(12, 1, end), fast=False)
            return parked, response, full[4:], left_open
        finally:
            await broker.shutdown()

    parked, response, full, left_open = run(go())
    assert parked == [1] and written_later
    assert len(response) > 100_000 and response == full
    assert left_open <= 0


def test_topic_ids_kept_by_the_fast_path_stay_bounded_and_right(tmp_path, monkeypatch):
    """Fetch v13+ names its topic by id; the fast path keeps the ids it has read (at most
    MAX_TOPIC_IDS, all dropped when full): a client sending many unknown ids neither grows
    it without bound nor changes what a known id is answered."""
    monkeypatch.setattr(fast_path, "MAX_TOPIC_IDS", 3)

    async def go():
        broker = await start_broker(tmp_path, "a")
        fast = broker.dispatcher.fast_path
        topic_id = broker.cache.topic(TOPIC).topic_id
        try:
            await answer(broker, produce_frame(9, 0), fast=True)
            sizes, pairs = [], []
            for i in range(10):
                unknown = fetch_frame(16, i, 0, uuid.uuid4())
                assert fast.fetch_request(unknown) is None  # the full path answers it
                sizes.append(len(fast._topic_ids))
                known = fetch_frame(16, 100 + i, 0, topic_id)
                pairs.append((await answer(broker, known, fast=True),
                              await answer(broker, known, fast=False)))
            return sizes, pairs
        finally:
            await broker.shutdown()

    sizes, pairs = run(go())
    assert max(sizes) <= 3
    for a, b in pairs:
        assert a == b and b"v" in a


def _session_steps(version: int, topic_id) -> list[tuple[str, dict, bool]]:
    """A consumer's fetch session, step by step: (what, fetch_frame's arguments, whether
    the fast path reads it). "produce" steps append two records instead. The session's
    id is filled in when it is opened (both brokers draw the same one)."""
    tid = topic_id if version >= 13 else None
    steps = [
        ("open", dict(offset=0, session_epoch=0), False),
        ("at the end, nothing new", dict(offset=5, session_epoch=1), True),
        ("produce", {}, False),
        ("no partition named: the session's position", dict(
            offset=0, session_epoch=2, no_partition=True), True),
        ("nothing new", dict(offset=7, session_epoch=3), True),
        ("read_committed", dict(offset=5, session_epoch=4, isolation_level=1), True),
        ("a wrong epoch", dict(offset=7, session_epoch=9), False),
        ("a second partition", dict(offset=0, session_epoch=5, partition=1), False),
        ("two partitions", dict(offset=0, session_epoch=6, no_partition=True), True),
        ("produce", {"partition": 1}, False),
        ("two partitions, the second named", dict(offset=0, session_epoch=7, partition=1),
         True),
        ("two partitions, none named: the same positions", dict(
            offset=0, session_epoch=8, no_partition=True), True),
        ("two partitions, both named", dict(offset=0, session_epoch=9, partitions=(1, 0)),
         True),
        ("two partitions, read_committed", dict(offset=0, session_epoch=10,
                                                no_partition=True, isolation_level=1), True),
        ("two partitions, one out of range", dict(offset=99, session_epoch=11, partition=1),
         True),
        ("two partitions, one named twice", dict(offset=2, session_epoch=12,
                                                 partitions=(1, 1)), False),
        ("two partitions, min_bytes above what is there, no wait", dict(
            offset=7, session_epoch=13, min_bytes=1 << 20, partitions=(0, 1)), True),
        ("one forgotten", dict(offset=7, session_epoch=14, forgotten=True), False),
        ("out of range", dict(offset=99, session_epoch=15), True),
        ("back to the start", dict(offset=0, session_epoch=16), True),
        ("produce", {}, False),
        ("min_bytes above what is there, no wait", dict(
            offset=7, session_epoch=17, min_bytes=1 << 20), True),
        ("an unknown session", dict(offset=7, session_epoch=18, unknown=True), False),
        ("closed", dict(offset=7, session_epoch=-1), False),
    ]
    if version >= 13:  # a session by topic id continued by name
        steps.insert(5, ("v12 in a v13 session", dict(offset=7, session_epoch=4, v12=True),
                         False))
    return [(what, {**kwargs, "topic_id": tid}, fast) for what, kwargs, fast in steps]


@pytest.mark.parametrize("version", [7, 11, 12, 13, 17])
def test_a_fetch_session_gets_the_full_paths_answers_in_lockstep(tmp_path, version):
    """An incremental fetch in a consumer's session of one partition (the Java client and
    kafka-python fetch so) is read by the fast path; the session moves on exactly as the
    handler moves it: two brokers drawing the same session id, one with the fast path and
    one without, give the same bytes at every step, errors included, and the steps the
    fast path leaves (a session opened, closed or not found, a wrong epoch, two
    partitions, a forgotten one) change nothing before the full path sees them."""
    async def go():
        brokers = [await start_broker(tmp_path, "fast"), await start_broker(tmp_path, "full")]
        try:
            for i in range(5):
                frame = produce_frame(9, i)  # the same batch (its timestamps) for both
                for b in brokers:
                    await answer(b, frame, fast=False)
            for b in brokers:
                b.fetch_sessions._rng = random.Random(17)
            fast = brokers[0].dispatcher.fast_path
            topic_id = brokers[0].cache.topic(TOPIC).topic_id
            other_id = brokers[1].cache.topic(TOPIC).topic_id
            session_id, out = 0, []
            for n, (what, kwargs, expect_fast) in enumerate(
                    _session_steps(version, topic_id), start=1):
                if what == "produce":
                    for i in range(2):
                        frame = produce_frame(9, 100 * n + i,
                                              partition=kwargs.get("partition", 0))
                        for b in brokers:
                            await answer(b, frame, fast=False)
                    continue
                kwargs = dict(kwargs)
                offset, v = kwargs.pop("offset"), 12 if kwargs.pop("v12", False) else version
                sid = session_id + 1 if kwargs.pop("unknown", False) else session_id
                answers = []
                for b, on in zip(brokers, (True, False), strict=True):
                    tid = b.cache.topic(TOPIC).topic_id if kwargs["topic_id"] else None
                    frame = fetch_frame(v, n, offset, **{**kwargs, "topic_id": tid},
                                        session_id=sid)
                    if on:
                        assert (fast.fetch_request(frame) is not None) == expect_fast, what
                    answers.append(await answer(b, frame, fast=on))
                if what == "open":
                    body = parse_response(1, version, answers[0][4:])
                    session_id = body.session_id
                    assert session_id and session_id == parse_response(
                        1, version, answers[1][4:]).session_id
                out.append((what, answers))
            sessions = [(s.epoch, [(p.partition, p.fetch_offset, p.high_watermark)
                                   for p in s.partitions.values()])
                        for b in brokers for s in b.fetch_sessions._sessions.values()]
            return out, sessions, topic_id, other_id
        finally:
            for b in brokers:
                await b.shutdown()

    out, sessions, topic_id, other_id = run(go())
    for what, (a, b) in out:
        # the brokers gave the topic different ids: v13+ answers name them
        assert a == b.replace(other_id.bytes, topic_id.bytes), what
    assert sessions == []  # the last step closed the session on both
    records = [what for what, (a, _b) in out if b"v30" in a or b"v31" in a]
    assert "no partition named: the session's position" in records
    second = 100 * next(n for n, (what, kwargs, _fast) in enumerate(
        _session_steps(version, topic_id), start=1) if kwargs.get("partition") == 1 and
        what == "produce")
    records = [what for what, (a, _b) in out if b"v%d" % second in a]
    assert records == ["two partitions, the second named",
                       "two partitions, none named: the same positions",
                       "two partitions, both named", "two partitions, read_committed"]


def _count_at_once(broker: Broker) -> tuple[list, list]:
    """The Fetches the connections serve as they arrive (Dispatcher.fetch_at_once), by
    correlation id: (parked, answered there and then)."""
    dispatcher = broker.dispatcher
    parked, now = [], []
    fetch_at_once = dispatcher.fetch_at_once

    def counting(frame, answer_):
        result = fetch_at_once(frame, answer_)
        if result is not None:
            (parked if isinstance(result, fast_path.ParkedFetch) else now).append(
                int.from_bytes(frame[4:8], "big"))
        return result
    dispatcher.fetch_at_once = counting
    return parked, now


@pytest.mark.parametrize("version", [4, 12, 13, 17])
def test_a_fetch_with_data_to_read_is_answered_as_it_arrives(tmp_path, version):
    """A consumer catching up (data at its offset), or asking for no wait, is answered as its
    Fetch arrives, without the serving task; one short of min_bytes is parked there and
    answered at its max wait. Every answer is the full path's."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            parked, now = _count_at_once(broker)
            dispatched = []
            dispatch = broker.dispatcher.dispatch

            async def counting(frame, *args):
                dispatched.append(frame[1])
                return await dispatch(frame, *args)
            broker.dispatcher.dispatch = counting
            await _answers(broker, [produce_frame(9, 0), produce_frame(9, 1)], 2)
            end = broker.replicas.partitions[(TOPIC, 0)].log.log_end_offset
            tid = broker.cache.topic(TOPIC).topic_id if version >= 13 else None
            frames = [fetch_frame(version, 1, 0, tid, max_wait_ms=30_000),
                      fetch_frame(version, 2, end, tid),  # no wait: answered empty
                      fetch_frame(version, 3, 99, tid, max_wait_ms=30_000),  # out of range
                      fetch_frame(version, 4, 0, tid, max_wait_ms=300, min_bytes=1 << 20)]
            served = [(await _answers(broker, [frame], 1))[0] for frame in frames]
            broker.dispatcher.dispatch = dispatch
            full = [(await answer(broker, frame, fast=False))[4:] for frame in frames]
            return parked, now, dispatched, served, full
        finally:
            await broker.shutdown()

    parked, now, dispatched, served, full = run(go())
    assert now == [1, 2, 3] and parked == [4]
    assert dispatched == []  # neither the Produces nor the Fetches went through the task
    assert served == full
    assert b"v0" in served[0] and b"v1" in served[0] and b"v0" in served[3]


_PARKED_SESSION_STEPS = {  # (offset, epoch, fetch_frame's arguments, partition produced to)
    (0,): [(0, 1, {"max_wait_ms": 30_000}, 0),  # parked, woken by a Produce
           (1, 2, {"max_wait_ms": 100}, None),  # parked, nothing new: its max wait
           (0, 3, {"no_partition": True, "max_wait_ms": 100}, None),
           (0, 4, {"max_wait_ms": 30_000}, None)],  # data to read: at once
    (0, 1): [(0, 1, {"no_partition": True, "max_wait_ms": 30_000}, 1),
             (1, 2, {"partition": 1, "max_wait_ms": 100}, None),
             (0, 3, {"max_wait_ms": 30_000}, 0),  # partition 0 named, woken by its Produce
             (0, 4, {"partitions": (1, 0), "max_wait_ms": 30_000}, None)],
}


@pytest.mark.parametrize("version", [7, 12, 13])
@pytest.mark.parametrize("shape", list(_PARKED_SESSION_STEPS))
def test_a_fetch_in_a_session_parked_as_it_arrives_gets_the_full_paths_answer(
        tmp_path, version, shape):
    """A consumer tailing its partitions in a fetch session (kafka-python, the Java client)
    is parked as its incremental Fetch arrives and answered by the Produce that brings data
    to any of them, or at its max wait with nothing new; a Fetch in the session with data
    to read is answered as it arrives. The answers and the session's state are the full
    path's (a second broker, the same session id drawn, served without the fast path)."""
    async def go():
        brokers = [await start_broker(tmp_path, "fast"), await start_broker(tmp_path, "full")]
        try:
            parked, now = _count_at_once(brokers[0])
            for b in brokers:
                b.fetch_sessions._rng = random.Random(5)
            ids = [b.cache.topic(TOPIC).topic_id if version >= 13 else None for b in brokers]

            def frames(n, offset, epoch, **kwargs):
                return [fetch_frame(version, n, offset, tid, session_id=sid,
                                    session_epoch=epoch, **kwargs) for tid in ids]
            sid = 0
            opened = [await answer(b, f, fast=False)
                      for b, f in zip(brokers, frames(1, 0, 0, partitions=shape), strict=True)]
            sid = parse_response(1, version, opened[0][4:]).session_id
            out = []
            for n, (offset, epoch, kwargs, produce) in enumerate(_PARKED_SESSION_STEPS[shape],
                                                                 start=2):
                fast_frame, full_frame = frames(n, offset, epoch, **kwargs)
                waiting = asyncio.ensure_future(_answers(brokers[0], [fast_frame], 1))
                full = asyncio.ensure_future(answer(brokers[1], full_frame, fast=False))
                await asyncio.sleep(0.1)
                if produce is not None:
                    frame = produce_frame(9, n, partition=produce)
                    await _answers(brokers[0], [frame], 1)
                    await answer(brokers[1], frame, fast=False)
                (served,) = await asyncio.wait_for(waiting, 5)
                out.append((served, (await full)[4:]))
            sessions = [[(s.id, s.epoch, [(p.partition, p.fetch_offset, p.high_watermark)
                                          for p in s.partitions.values()])
                         for s in b.fetch_sessions._sessions.values()] for b in brokers]
            return parked, now, out, sessions, ids
        finally:
            for b in brokers:
                await b.shutdown()

    parked, now, out, sessions, ids = run(go())
    assert parked == [2, 3, 4] and now == [5]
    for served, full in out:
        assert served == (full.replace(ids[1].bytes, ids[0].bytes) if ids[0] else full)
    assert b"v2" in out[0][0] and b"v2" in out[3][0]
    if len(shape) > 1:  # the Produce to the partition named woke it too
        assert b"v4" in out[2][0] and b"v4" in out[3][0]
    assert sessions[0] == sessions[1] and sessions[0][0][1] == 5


def test_idempotent_produces_with_acks_all_get_the_full_paths_answers_in_lockstep(tmp_path):
    """An idempotent producer's batches (a producer id and sequence numbers, acks=-1 as the
    Java client and librdkafka with enable.idempotence send them) on the fast path: the
    next sequence, a retried batch (a duplicate: the first write's offset, nothing
    written), a gap or a batch overlapping one written (OUT_OF_ORDER_SEQUENCE_NUMBER), a
    new producer epoch, the old one after it (INVALID_PRODUCER_EPOCH), and
    NOT_ENOUGH_REPLICAS where min.insync.replicas asks for more than the ISR, all answered
    as the full path answers them, with the same logs after."""
    async def go():
        brokers = [await start_broker(tmp_path, "fast"), await start_broker(tmp_path, "full")]
        fast = brokers[0].dispatcher.fast_path
        try:
            for b in brokers:  # the answer templates, and a producer id on both
                await answer(b, produce_frame(9, 0, acks=-1), fast=False)
            now = int(time.time() * 1000)

            def batch(sequence, epoch=0, n=2):
                return build_batch([NewRecord(b"i%d" % (sequence + i), timestamp=now)
                                    for i in range(n)], producer_id=4242,
                                   producer_epoch=epoch, base_sequence=sequence)
            steps = [batch(0), batch(2), batch(2), batch(0), batch(7), batch(4), batch(4, n=1),
                     batch(0, epoch=1), batch(2, epoch=0)]
            out, taken = [], []
            produce_ = fast.produce
            fast.produce = lambda f: taken.append(produce_(f)) or taken[-1]
            for cid, records in enumerate(steps, start=1):
                frame = produce_frame(9, cid, acks=-1, records=records)
                out.append([await answer(b, frame, fast=fast_on)
                            for b, fast_on in zip(brokers, (True, False), strict=True)])
            # a topic that asks for two in-sync replicas: refused before anything is written
            for b in brokers:
                await b.controller.create_topic(NewTopic(
                    "two-isr", 1, 1, configs={"min.insync.replicas": "2"}))
            deadline = time.monotonic() + 10
            while any(("two-isr", 0) not in b.replicas.partitions for b in brokers):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            for b in brokers:
                await answer(b, produce_frame(9, 50, topic="two-isr"), fast=False)
            frame = produce_frame(9, 51, acks=-1, topic="two-isr")
            out.append([await answer(b, frame, fast=fast_on)
                        for b, fast_on in zip(brokers, (True, False), strict=True)])
            logs = [[(k, p.log.log_end_offset, p.log.high_watermark)
                     for k, p in sorted(b.replicas.partitions.items())] for b in brokers]
            return out, logs, [t is not None for t in taken]
        finally:
            for b in brokers:
                await b.shutdown()

    out, logs, taken = run(go())
    assert taken[:4] == [True] * 4 and not all(taken)  # the errors: the full path
    for i, (a, b) in enumerate(out):
        assert a == b, i
    assert logs[0] == logs[1]
    codes = [parse_response(0, 9, a[4:]).responses[0].partition_responses[0].error_code
             for a, _b in out]
    assert codes[:4] == [0, 0, 0, 0]  # two writes, then two retries answered as written
    assert codes[4:] == [ErrorCode.out_of_order_sequence_number, 0,
                         ErrorCode.out_of_order_sequence_number, 0,
                         ErrorCode.invalid_producer_epoch, ErrorCode.not_enough_replicas]


@pytest.mark.parametrize("version", [4, 12, 13])
def test_a_tailing_fetch_of_several_partitions_is_parked_on_all_and_woken_by_any(
        tmp_path, version):
    """A consumer tailing two partitions (one Fetch for both, as librdkafka sends it) is
    parked as its Fetch arrives under both; a Produce to either wakes it, its answer is the
    full path's, and it leaves no waiter under the other partition."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            parked, _now = _count_at_once(broker)
            tid = broker.cache.topic(TOPIC).topic_id if version >= 13 else None
            frame = fetch_frame(version, 1, 0, tid, partitions=(0, 1), max_wait_ms=30_000)
            waiting = asyncio.ensure_future(_answers(broker, [frame], 1))
            await asyncio.sleep(0.2)
            early = waiting.done()
            while_parked = {k: len(v) for k, v in broker.replicas._waiters.items()}
            await _answers(broker, [produce_frame(9, 2, partition=1)], 1)
            (woken,) = await asyncio.wait_for(waiting, 5)
            full = await answer(broker, fetch_frame(version, 1, 0, tid, partitions=(0, 1)),
                                fast=False)
            return parked, early, while_parked, woken, full[4:], dict(broker.replicas._waiters)
        finally:
            await broker.shutdown()

    parked, early, while_parked, woken, full, after = run(go())
    assert parked == [1] and not early
    assert while_parked == {(TOPIC, 0): 1, (TOPIC, 1): 1}
    assert woken == full and b"v2" in woken
    assert after == {}


@pytest.mark.parametrize("change", ["produce to both", "topic deleted"])
@pytest.mark.parametrize("version", [4, 12, 13])
def test_a_fetch_parked_on_two_partitions_sees_a_change_of_both_whole(
        tmp_path, version, change):
    """A consumer's Fetch of two partitions parked as it arrives is answered by the change
    that wakes it there and then; a change of both partitions at once (a Produce of both,
    as the Java client, kafka-python and aiokafka send one; the topic deleted) wakes it
    once both are changed (ReplicaManager.wakes_held), so its answer is the one the full
    path gives a loop turn later: both partitions' records, or both partitions' error."""
    produce = produce_frame(9, 2, partitions=2)  # the same bytes to both brokers

    async def fetch_answer(name: str, fast: bool) -> bytes:
        broker = await start_broker(tmp_path, name)
        try:
            tid = broker.cache.topic(TOPIC).topic_id if version >= 13 else None
            frame = fetch_frame(version, 1, 0, tid, partitions=(0, 1), max_wait_ms=30_000)
            if not fast:
                broker.dispatcher.fast_path = None
            waiting = asyncio.ensure_future(_answers(broker, [frame], 1))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            if change == "topic deleted":
                await broker.controller.delete_topic(TOPIC)
            else:  # a Produce of two partitions: the full path's either way
                saved, broker.dispatcher.fast_path = broker.dispatcher.fast_path, None
                await answer(broker, produce, fast=False)
                broker.dispatcher.fast_path = saved
            (woken,) = await asyncio.wait_for(waiting, 5)
            return woken if tid is None else woken.replace(tid.bytes, b"\x17" * 16)
        finally:
            await broker.shutdown()

    async def go():  # two brokers: each topic has an id of its own (made alike above)
        return await fetch_answer("a", True), await fetch_answer("b", False)

    fast, full = run(go())
    assert fast == full
    body = parse_response(1, version, fast)
    partitions = [p for t in body.responses for p in t.partitions]
    assert [p.partition_index for p in partitions] == [0, 1]
    if change == "topic deleted":  # the id was known when the fetch was read
        assert [p.error_code for p in partitions] == [ErrorCode.unknown_topic_or_partition] * 2
    else:
        assert [p.high_watermark for p in partitions] == [1, 1]
        assert all(p.records for p in partitions)


@pytest.mark.parametrize("version", [13, 17])
def test_a_session_holding_a_deleted_topic_gets_the_full_paths_answer(tmp_path, version):
    """A consumer's session of two topics, one deleted under it (its id no longer known):
    the fast path serves the incremental fetch and answers UNKNOWN_TOPIC_ID for the
    deleted topic's partition, as the handler does (`fetch.session_reads` and
    `session_topics`, shared), byte for byte, the session left as the handler leaves it."""
    async def go():
        brokers = [await start_broker(tmp_path, "fast"), await start_broker(tmp_path, "full")]
        try:
            produced = produce_frame(9, 1)  # the same batch (its timestamps) for both
            for b in brokers:
                b.fetch_sessions._rng = random.Random(11)
                await answer(b, produced, fast=False)

            def frame(b, n, **kwargs):
                tid = b.cache.topic(TOPIC).topic_id
                other = b.cache.topic("append-time").topic_id
                return fetch_frame(version, n, 0, tid, more_topics=(
                    ("append-time", other, (0,)),), **kwargs)
            opened = [await answer(b, frame(b, 1, session_epoch=0), fast=False)
                      for b in brokers]
            sid = parse_response(1, version, opened[0][4:]).session_id
            ids = [(b.cache.topic(TOPIC).topic_id, b.cache.topic("append-time").topic_id)
                   for b in brokers]
            for b in brokers:
                await b.controller.delete_topic("append-time")
            deadline = time.monotonic() + 10
            while any(b.cache.topic("append-time") for b in brokers):
                assert time.monotonic() < deadline, "the topic is still known"
                await asyncio.sleep(0.01)
            fast = brokers[0].dispatcher.fast_path
            out = []
            for epoch in (1, 2):
                frames = [fetch_frame(version, 10 + epoch, 0, session_id=sid,
                                      session_epoch=epoch, no_partition=True)
                          for _b in brokers]
                read = fast.fetch_request(frames[0])
                out.append((read is not None,
                            await answer(brokers[0], frames[0], fast=True),
                            await answer(brokers[1], frames[1], fast=False)))
            sessions = [[(s.epoch, sorted(p.partition for p in s.partitions.values()))
                         for s in b.fetch_sessions._sessions.values()] for b in brokers]
            return out, sessions, ids
        finally:
            for b in brokers:
                await b.shutdown()

    out, sessions, ids = run(go())
    for taken, fast_answer, full_answer in out:
        assert taken
        for fast_id, full_id in zip(*ids, strict=True):  # the brokers' own topic ids
            full_answer = full_answer.replace(full_id.bytes, fast_id.bytes)
        assert fast_answer == full_answer
    body = parse_response(1, version, out[0][1][4:])
    codes = {p.error_code for t in body.responses for p in t.partitions}
    assert ErrorCode.unknown_topic_id in codes
    assert sessions[0] == sessions[1] and sessions[0][0][0] == 3
