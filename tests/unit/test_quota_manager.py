"""Client quotas (strom.security.quotas): Kafka's precedence, the sampled rate and the
throttle time it gives (on a manual clock), the store layout at Kafka's paths with other
keys of a node kept, validation; and the dispatcher's measure of a request's time on the
loop (not its waits)."""

from __future__ import annotations

import asyncio
import json

import pytest

from strom.clock import ManualClock
from strom.cluster.local_store import LocalMetadataStore
from strom.security.quotas import (
    DEFAULT,
    PRODUCE,
    REQUEST,
    ClientQuotaManager,
    QuotaError,
    Rate,
    entity_path,
)
from strom.server.dispatcher import _timed


def manager(clock=None, quotas=None, num=11, size=1):
    clock = clock or ManualClock()
    m = ClientQuotaManager(None, num, size, lambda: clock.monotonic() * 1000)  # type: ignore
    m.quotas = quotas or {}
    return m, clock


def test_precedence_per_key():
    m, _ = manager(quotas={
        ("alice", "app"): {PRODUCE: 1.0},
        ("alice", None): {PRODUCE: 2.0, REQUEST: 20.0},
        (DEFAULT, DEFAULT): {PRODUCE: 3.0},
        (DEFAULT, None): {REQUEST: 30.0},
        (None, "app"): {PRODUCE: 4.0},
        (None, DEFAULT): {PRODUCE: 5.0},
    })
    assert m.bound(PRODUCE, "User:alice", "app") == (("alice", "app"), 1.0)
    assert m.bound(PRODUCE, "User:alice", "other") == (("alice", None), 2.0)
    assert m.bound(REQUEST, "User:alice", "app") == (("alice", None), 20.0)
    assert m.bound(PRODUCE, "User:bob", "app") == ((DEFAULT, DEFAULT), 3.0)
    assert m.bound(REQUEST, "User:bob", "app") == ((DEFAULT, None), 30.0)
    only_clients, _ = manager(quotas={(None, "app"): {PRODUCE: 4.0},
                                      (None, DEFAULT): {PRODUCE: 5.0}})
    assert only_clients.bound(PRODUCE, "User:x", "app")[1] == 4.0
    assert only_clients.bound(PRODUCE, "User:x", "other")[1] == 5.0
    assert only_clients.bound(REQUEST, "User:x", "app") is None


def test_rate_counts_at_least_num_minus_one_windows():
    r = Rate(11, 1000)
    r.record(10_000, 0)
    rate, span = r.measure(0)
    assert span == 10_000 and rate == 1000.0  # 10 KB over an assumed 10 s
    for t in range(1, 30):
        r.record(1000, t * 1000)
    rate, span = r.measure(29_000)
    assert 900 <= rate <= 1100  # a steady 1000 B/s, old samples gone
    assert len(r.samples) <= 11


def test_throttle_time_brings_the_rate_back_to_the_bound():
    m, clock = manager(quotas={(None, "c"): {PRODUCE: 1000.0}}, num=2)
    assert m.record(PRODUCE, "User:u", "c", 500) == 0
    throttle = m.record(PRODUCE, "User:u", "c", 2500)  # 3000 B over an assumed 1 s
    assert throttle == 2000  # (3000 - 1000) / 1000 x 1000 ms
    assert m.record(PRODUCE, "User:u", "other", 10**9) == 0  # no quota: never throttled
    # a client that keeps to 90 % of its rate, in 10 requests a second, is not throttled
    steady, clock = manager(quotas={(None, "c"): {PRODUCE: 1000.0}}, num=3)
    throttles = []
    for _ in range(200):
        clock.advance(100)
        throttles.append(steady.record(PRODUCE, "User:u", "c", 90))
    assert throttles == [0] * 200


def test_store_layout_validation_and_follow(tmp_path):
    async def run():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        # the user's node holds a SCRAM credential already: it is kept
        await store.create("/config/users/alice", json.dumps(
            {"version": 1, "config": {"SCRAM-SHA-256": "salt=..."}}).encode())
        clock = ManualClock()
        a = ClientQuotaManager(store, 11, 1, lambda: clock.monotonic() * 1000)
        b = ClientQuotaManager(store, 11, 1, lambda: clock.monotonic() * 1000)
        await a.start()
        await b.start()
        await a.alter(("alice", None), [(PRODUCE, 1024.0)], False)
        await a.alter(("alice", "my app"), [(REQUEST, 12.5)], False)
        await a.alter((None, DEFAULT), [(PRODUCE, 99.0)], False)
        node, _ = await store.get("/config/users/alice")
        assert json.loads(node) == {"version": 1, "config": {
            "SCRAM-SHA-256": "salt=...", "producer_byte_rate": "1024"}}
        assert entity_path(("alice", "my app")) == "/config/users/alice/clients/my%20app"
        assert await store.get("/config/users/alice/clients/my%20app") is not None
        assert await store.get("/config/clients/<default>") is not None
        changes = await store.get_children("/config/changes")
        assert len(changes) == 3 and changes[0] == "config_change_0000000000"
        first, _ = await store.get("/config/changes/config_change_0000000000")
        assert json.loads(first) == {"version": 2, "entity_path": "users/alice"}
        for _ in range(50):
            if b.quotas == a.quotas:
                break
            await asyncio.sleep(0.02)
        assert b.quotas == {("alice", None): {PRODUCE: 1024.0},
                            ("alice", "my app"): {REQUEST: 12.5},
                            (None, DEFAULT): {PRODUCE: 99.0}}
        assert [e for e, _ in a.describe([("user", 0, "alice")], strict=True)] == [
            ("alice", None)]
        assert len(a.describe([("user", 0, "alice")], strict=False)) == 2
        for bad in ([("bogus", 1.0)], [(PRODUCE, 0.0)], [(PRODUCE, 2.5)]):
            with pytest.raises(QuotaError):
                await a.alter(("x", None), bad, False)
        await a.alter(("alice", None), [(PRODUCE, None)], False)
        node, _ = await store.get("/config/users/alice")
        assert json.loads(node)["config"] == {"SCRAM-SHA-256": "salt=..."}
        await store.close()
    asyncio.run(run())


def test_timed_counts_steps_not_waits():
    async def handler(event):
        await event.wait()
        return "done"

    async def run():
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, event.set)
        busy = [0.0]
        assert await _timed(handler(event), busy) == "done"
        return busy[0]
    assert asyncio.run(run()) < 0.3  # the 0.3 s wait is not the handler's time

    async def failing():
        await asyncio.sleep(0)
        raise ValueError("x")

    async def run_failing():
        with pytest.raises(ValueError):
            await _timed(failing(), [0.0])
    asyncio.run(run_failing())


def test_window_cap_and_unrecord():
    from strom.security.quotas import FETCH

    m, _ = manager(quotas={(None, "c"): {FETCH: 1000.0}}, num=11, size=1)
    assert m.max_window_value(FETCH, "User:u", "c") == 10_000  # 1000 B/s x 10 windows
    assert m.max_window_value(FETCH, "User:u", "other") is None
    assert m.record(FETCH, "User:u", "c", 30_000) > 0
    m.unrecord(FETCH, "User:u", "c", 30_000)  # a throttled fetch sent nothing
    assert m.record(FETCH, "User:u", "c", 5_000) == 0
