"""The follower's side of KIP-227 fetch sessions (strom.replication.fetch_session_handler),
checked against the broker's session cache (strom.api.fetch_session) where both meet."""

from __future__ import annotations

from strom.api.fetch_session import FetchSessionCache, IncrementalContext, PartitionRequest
from strom.replication.fetch_session_handler import FetchSessionHandler, PartitionData

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71


def data(offset: int, epoch: int = 5) -> PartitionData:
    return PartitionData(offset, 0, 1 << 20, epoch)


def test_a_full_fetch_opens_the_session_and_idle_fetches_send_nothing():
    h = FetchSessionHandler()
    wanted = {("t", i): data(10) for i in range(100)}
    first = h.build(wanted)
    assert first.full and first.epoch == 0 and first.session_id == 0
    assert first.to_send == wanted and first.to_forget == []
    assert h.handle_response(first, 0, 1234, list(wanted))
    epochs = []
    for _ in range(3):
        idle = h.build(dict(wanted))
        assert not idle.full and idle.session_id == 1234
        assert idle.to_send == {} and idle.to_forget == []
        assert set(idle.session) == set(wanted)  # the leader still fetches all of them
        epochs.append(idle.epoch)
        assert h.handle_response(idle, 0, 1234, [])
    assert epochs == [1, 2, 3]
    assert (h.full_fetches, h.incremental_fetches) == (1, 3)


def test_only_moved_added_and_removed_partitions_go_out():
    h = FetchSessionHandler()
    wanted = {("t", 0): data(0), ("t", 1): data(0), ("u", 0): data(0)}
    h.handle_response(h.build(wanted), 0, 7, list(wanted))
    wanted[("t", 1)] = data(42)              # appended
    wanted[("u", 0)] = data(0, epoch=6)      # a new leader epoch
    del wanted[("t", 0)]                     # no longer followed from this leader
    wanted[("v", 3)] = data(0)               # newly followed
    req = h.build(wanted)
    assert req.epoch == 1
    assert req.to_send == {("t", 1): data(42), ("u", 0): data(0, epoch=6), ("v", 3): data(0)}
    assert req.to_forget == [("t", 0)]
    assert set(req.session) == {("t", 1), ("u", 0), ("v", 3)}


def test_session_errors_and_lost_answers_fall_back_to_a_full_fetch():
    h = FetchSessionHandler()
    wanted = {("t", 0): data(0)}
    h.handle_response(h.build(wanted), 0, 99, list(wanted))
    # the broker lost the session (restart, eviction): a new one, not naming the old id
    assert not h.handle_response(h.build(wanted), FETCH_SESSION_ID_NOT_FOUND, 0, [])
    req = h.build(wanted)
    assert req.full and req.session_id == 0 and req.epoch == 0 and req.to_send == wanted
    h.handle_response(req, 0, 100, list(wanted))
    # a refused epoch: a full fetch that closes the session it names
    assert not h.handle_response(h.build(wanted), INVALID_FETCH_SESSION_EPOCH, 0, [])
    req = h.build(wanted)
    assert req.full and (req.session_id, req.epoch) == (100, 0)
    h.handle_response(req, 0, 101, list(wanted))
    # no answer at all (a dropped connection)
    h.build(wanted)
    h.handle_error()
    req = h.build(wanted)
    assert req.full and (req.session_id, req.epoch) == (101, 0)
    # an answer for a partition outside the session is not used
    h.handle_response(req, 0, 102, list(wanted))
    assert not h.handle_response(h.build(wanted), 0, 102, [("other", 0)])
    assert h.build(wanted).full
    assert h.resets == 3


def test_no_room_on_the_broker_means_sessionless_full_fetches():
    h = FetchSessionHandler()
    wanted = {("t", 0): data(0)}
    for _ in range(3):
        req = h.build(wanted)
        assert req.full and req.session_id == 0 and req.epoch == 0
        assert h.handle_response(req, 0, 0, list(wanted))


def test_against_the_broker_cache_the_session_follows_the_follower():
    """Each request the handler builds is one the broker's cache accepts, and the cache's
    session ends up with exactly the partitions the follower wants, at its offsets."""
    clock = [0.0]
    cache = FetchSessionCache(10, lambda: clock[0])
    h = FetchSessionHandler()

    def send(wanted):
        req = h.build(wanted)
        entries = [PartitionRequest(tp[0], tp[1], d.fetch_offset, d.max_bytes,
                                    d.current_leader_epoch, d.log_start_offset)
                   for tp, d in req.to_send.items()]
        ctx = cache.new_context(req.session_id, req.epoch, True, False, entries,
                                req.to_forget)
        code = ctx.error_code
        if code:
            h.handle_response(req, code, 0, [])
            return code
        results = [(e, 0, 5, 5, 0, 0) for e in ctx.partitions()]
        keep = ctx.respond(results)
        answered = [(results[i][0].key, results[i][0].partition) for i in keep]
        assert h.handle_response(req, 0, ctx.session_id, answered)
        return ctx

    wanted = {("t", i): data(i) for i in range(5)}
    assert send(wanted).session_id != 0
    ctx = send(wanted)
    assert isinstance(ctx, IncrementalContext)
    wanted[("t", 2)] = data(50)
    del wanted[("t", 4)]
    ctx = send(wanted)
    session = ctx.session
    assert {(k, p): e.fetch_offset for (k, p), e in session.partitions.items()} == \
        {tp: d.fetch_offset for tp, d in wanted.items()}
    # the broker forgets the session (an eviction): one error, then a new session
    cache.remove(session.id)
    assert send(wanted) == FETCH_SESSION_ID_NOT_FOUND
    new = send(wanted)
    assert new.session_id not in (0, session.id) and len(cache) == 1
    assert isinstance(send(wanted), IncrementalContext)
