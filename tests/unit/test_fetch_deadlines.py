"""FetchDeadlines: the max waits of parked fetches under one loop timer."""

from __future__ import annotations

import asyncio
import random

import uvloop

from strom.replication import fetch_deadlines
from strom.replication.fetch_deadlines import CLOCK_RESOLUTION_S, PURGE_AT, FetchDeadlines


class Call:
    """A parked fetch as FetchDeadlines sees it; records when its max wait came."""

    def __init__(self, loop, expired: list, name, timeout_s: float) -> None:
        self.loop = loop
        self.expired = expired
        self.name = name
        self.deadline = loop.time() + timeout_s
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, expired) -> None:
        if self.finished:
            return
        self.finished = True
        self.expired.append((self.name, self.loop.time(), self.deadline))


def counting_timers(loop) -> list:
    """The timers FetchDeadlines arms on `loop`: [handle, whether it has run] each."""
    armed = []
    call_at = loop.call_at

    def wrapper(when, callback, *args):
        entry = [None, False]

        def run(*args_):
            entry[1] = True
            callback(*args_)
        entry[0] = call_at(when, run, *args)
        armed.append(entry)
        return entry[0]
    loop.call_at = wrapper
    return armed


def test_each_parked_call_expires_once_at_its_deadline_under_one_timer():
    """Calls parked with mixed max waits expire once each, none before its deadline, in
    deadline order; those woken by data first are never expired; one timer is armed at a
    time, and far fewer than one per call."""
    rng = random.Random(7)

    async def go():
        loop = asyncio.get_running_loop()
        armed = counting_timers(loop)
        deadlines = FetchDeadlines(loop)
        expired, calls = [], []
        for i in range(600):
            call = Call(loop, expired, i, rng.choice((0.02, 0.05, 0.08)))
            deadlines.add(call, call.deadline - loop.time())
            calls.append(call)
            if i % 3 == 0:
                call.finished = True  # woken by data: never expired
            assert sum(not h.cancelled() and not ran for h, ran in armed) <= 1
            if i % 50 == 0:
                await asyncio.sleep(0.002)
        for _ in range(200):
            if all(c.finished for c in calls):
                break
            await asyncio.sleep(0.01)
        return expired, calls, len(armed), len(deadlines)

    expired, calls, timers, left = uvloop.run(go())
    assert sorted(name for name, _at, _deadline in expired) == [
        i for i in range(600) if i % 3]
    assert all(at >= deadline - CLOCK_RESOLUTION_S for _name, at, deadline in expired)
    assert [deadline for _n, _at, deadline in expired] == sorted(
        deadline for _n, _at, deadline in expired)
    assert timers < 100 and left == 0


def test_a_call_parked_again_as_it_expires_is_timed_too():
    """An expiring call may park a new one on the spot (a fetch short of min_bytes): it
    expires at its own deadline."""
    async def go():
        loop = asyncio.get_running_loop()
        deadlines = FetchDeadlines(loop)
        expired = []
        again = Call(loop, expired, "again", 0.05)

        class Reparking(Call):
            def set_result(self, expired_):
                super().set_result(expired_)
                again.deadline = loop.time() + 0.03
                deadlines.add(again, 0.03)
        deadlines.add(Reparking(loop, expired, "first", 0.02), 0.02)
        for _ in range(300):
            if len(expired) == 2:
                break
            await asyncio.sleep(0.01)
        return expired

    expired = uvloop.run(go())
    assert [name for name, _at, _d in expired] == ["first", "again"]
    assert all(at >= deadline - CLOCK_RESOLUTION_S for _name, at, deadline in expired)


def test_calls_done_early_are_swept_so_the_heap_stays_bounded():
    """Calls woken by data stay until their deadline, but a full heap sweeps them out; a
    heap of calls all still parked grows past the mark without a sweep per call."""
    async def go():
        loop = asyncio.get_running_loop()
        deadlines = FetchDeadlines(loop)
        expired, sizes = [], []
        for i in range(3 * PURGE_AT):
            call = Call(loop, expired, i, 30)
            deadlines.add(call, 30)
            call.finished = True
            sizes.append(len(deadlines))
        swept = fetch_deadlines.FetchDeadlines._purge
        sweeps = []

        def counting(self):
            sweeps.append(len(self))
            swept(self)
        fetch_deadlines.FetchDeadlines._purge = counting
        try:
            live = [Call(loop, expired, i, 30) for i in range(3 * PURGE_AT)]
            for call in live:
                deadlines.add(call, 30)
        finally:
            fetch_deadlines.FetchDeadlines._purge = swept
        return max(sizes), sweeps, len(deadlines)

    biggest, sweeps, size = uvloop.run(go())
    assert biggest <= PURGE_AT
    assert len(sweeps) <= 3 and size == 3 * PURGE_AT


def test_a_failing_call_leaves_the_others_timed():
    """An error from one call's expiry (logged by the loop) does not stop the timing of
    the calls after it."""
    async def go():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        deadlines = FetchDeadlines(loop)
        expired = []

        class Failing(Call):
            def set_result(self, expired_):
                super().set_result(expired_)
                raise RuntimeError("boom")
        deadlines.add(Failing(loop, expired, "failing", 0.02), 0.02)
        deadlines.add(Call(loop, expired, "later", 0.06), 0.06)
        for _ in range(300):
            if len(expired) == 2:
                break
            await asyncio.sleep(0.01)
        return expired, errors

    expired, errors = uvloop.run(go())
    assert [name for name, _at, _d in expired] == ["failing", "later"]
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)


def test_futures_get_true_at_their_max_wait_and_are_left_alone_once_done():
    """A future a task awaits (ReplicaManager._fetch) is resolved with True at its max
    wait; one resolved by data or cancelled first is not touched (no InvalidStateError)."""
    async def go():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        deadlines = FetchDeadlines(loop)
        waiting, woken, cancelled = (loop.create_future() for _ in range(3))
        for fut in (woken, cancelled, waiting):
            deadlines.add(fut, 0.02)
        woken.set_result(None)
        cancelled.cancel()
        expired = await asyncio.wait_for(waiting, 5)
        await asyncio.sleep(0.05)
        return expired, woken.result(), cancelled.cancelled(), errors

    assert uvloop.run(go()) == (True, None, True, [])
