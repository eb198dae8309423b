"""The fetch session cache and contexts (strom.api.fetch_session), as Kafka's FetchSession."""

from __future__ import annotations

import random

from strom.api.fetch_session import (
    FETCH_SESSION_ID_NOT_FOUND,
    FETCH_SESSION_TOPIC_ID_ERROR,
    INVALID_FETCH_SESSION_EPOCH,
    FetchSessionCache,
    FullContext,
    IncrementalContext,
    PartitionRequest,
    SessionError,
    next_epoch,
)


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def req(partition, offset=0, topic="t"):
    return PartitionRequest(topic, partition, offset, 1 << 20)


def rows(parts, data=None, hw=5, errors=None, starts=None):
    """(entry, error, hw, lso, log start, nbytes) for each partition."""
    data, errors, starts = data or {}, errors or {}, starts or {}
    return [(p, errors.get(p.partition, 0), hw, hw, starts.get(p.partition, 0),
             data.get(p.partition, 0)) for p in parts]


def answered(ctx, results):
    parts = [r[0].partition for r in results]
    return sorted(parts[i] for i in ctx.respond(results))


def open_session(cache, n=3, privileged=False):
    ctx = cache.new_context(0, 0, privileged, False, [req(i) for i in range(n)], [])
    assert isinstance(ctx, FullContext)
    assert ctx.respond(rows(ctx.partitions())) == list(range(n))
    return ctx.session_id


def test_epochs():
    cache = FetchSessionCache(10, FakeTime(), rng=random.Random(1))
    sid = open_session(cache)
    assert sid > 0 and cache.get(sid).epoch == 1
    assert cache.new_context(sid, 2, False, False, [], []).error_code == \
        INVALID_FETCH_SESSION_EPOCH
    assert cache.new_context(sid + 1, 1, False, False, [], []).error_code == \
        FETCH_SESSION_ID_NOT_FOUND
    assert cache.new_context(sid, 1, False, True, [], []).error_code == \
        FETCH_SESSION_TOPIC_ID_ERROR
    ctx = cache.new_context(sid, 1, False, False, [], [])
    assert isinstance(ctx, IncrementalContext) and cache.get(sid).epoch == 2
    # epoch -1 closes the session: a sessionless full fetch
    ctx = cache.new_context(sid, -1, False, False, [req(0)], [])
    assert isinstance(ctx, FullContext) and ctx.cache is None
    assert cache.get(sid) is None
    assert next_epoch(0x7FFFFFFF) == 1 and next_epoch(-1) == -1


def test_incremental_answers_only_news():
    cache = FetchSessionCache(10, FakeTime())
    sid = open_session(cache)
    ctx = cache.new_context(sid, 1, False, False, [], [])
    assert ctx.respond(rows(ctx.partitions())) == []  # nothing changed
    ctx = cache.new_context(sid, 2, False, False, [], [])
    parts = ctx.partitions()
    assert ctx.respond(rows(parts, data={1: 100})) == [1]  # new records
    # answered partitions go to the end of the fetch order
    assert [p.partition for p in cache.get(sid).partitions.values()] == [0, 2, 1]
    ctx = cache.new_context(sid, 3, False, False, [], [])
    assert [p.partition for p in ctx.partitions()] == [0, 2, 1]
    assert ctx.respond(rows(ctx.partitions(), hw=6)) == [0, 1, 2]  # high watermark moved
    ctx = cache.new_context(sid, 4, False, False, [], [])
    assert answered(ctx, rows(ctx.partitions(), hw=6, starts={0: 3})) == [0]  # log start
    # an error is sent every time, and the partition again once it clears
    for epoch in (5, 6):
        ctx = cache.new_context(sid, epoch, False, False, [], [])
        assert answered(ctx, rows(ctx.partitions(), hw=6, errors={2: 6}, starts={0: 3})) == [2]
    ctx = cache.new_context(sid, 7, False, False, [], [])
    assert answered(ctx, rows(ctx.partitions(), hw=6, starts={0: 3})) == [2]
    ctx = cache.new_context(sid, 8, False, False, [], [])
    assert answered(ctx, rows(ctx.partitions(), hw=6, starts={0: 3})) == []


def test_duplicate_request_while_parked_is_refused():
    cache = FetchSessionCache(10, FakeTime())
    sid = open_session(cache)
    first = cache.new_context(sid, 1, False, False, [], [])
    second = cache.new_context(sid, 2, False, False, [], [])  # sent while the first parks
    assert first.respond(rows(first.partitions(), data={0: 10})) == []
    assert first.error_code == INVALID_FETCH_SESSION_EPOCH and first.session_id == sid
    assert second.respond(rows(second.partitions(), data={0: 10})) == [0]
    assert second.error_code == 0


def test_update_and_forget():
    cache = FetchSessionCache(10, FakeTime())
    sid = open_session(cache, 2)
    ctx = cache.new_context(sid, 1, False, False, [req(1, 42), req(7, 3)], [("t", 0)])
    assert [(p.partition, p.fetch_offset) for p in ctx.partitions()] == [(1, 42), (7, 3)]
    # an added partition is answered at once (nothing was said of it yet)
    assert ctx.respond(rows(ctx.partitions())) == [1]
    # forgetting every partition closes the session
    ctx = cache.new_context(sid, 2, False, False, [], [("t", 1), ("t", 7)])
    assert isinstance(ctx, FullContext) and ctx.partitions() == [] and cache.get(sid) is None


def test_full_cache_and_eviction():
    clock = FakeTime()
    cache = FetchSessionCache(2, clock, eviction_ms=120_000)
    a = open_session(cache, 3)
    clock.t += 1
    b = open_session(cache, 5)
    # full, nothing stale or old: a consumer gets no session (id 0)
    assert open_session(cache, 100) == 0
    # a follower evicts the smallest consumer session
    f = open_session(cache, 1, privileged=True)
    assert f > 0 and cache.get(a) is None and cache.get(b) is not None
    # followers' sessions are not evicted by consumers while young
    assert open_session(cache, 1000) == 0
    # a session unused past the eviction time goes first (least recently used)
    clock.t += 100
    cache.touch(cache.get(f))
    clock.t += 50
    c = open_session(cache, 1)
    assert c > 0 and cache.get(b) is None and cache.get(f) is not None
    # once old (created past the eviction time), a more valuable consumer may evict it
    clock.t += 130
    cache.touch(cache.get(f))
    cache.touch(cache.get(c))
    assert open_session(cache, 1) == 0  # not worth more than c (same size)
    d = open_session(cache, 2)
    assert d > 0 and cache.get(c) is None
    assert len(cache) == 2


def test_no_slots_means_no_sessions():
    cache = FetchSessionCache(0, FakeTime())
    assert open_session(cache) == 0 and len(cache) == 0


def test_sessionless_fetch_creates_nothing():
    cache = FetchSessionCache(10, FakeTime())
    ctx = cache.new_context(0, -1, False, False, [req(0)], [])
    assert ctx.respond(rows(ctx.partitions())) == [0]
    assert ctx.session_id == 0 and len(cache) == 0
    assert isinstance(cache.new_context(5, 3, False, False, [], []), SessionError)
