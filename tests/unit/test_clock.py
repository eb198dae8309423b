"""strom.clock: the manual clock's time and timers, and the system clock's timers."""

from __future__ import annotations

import asyncio

from strom.clock import Clock, ManualClock


def test_manual_timers_fire_in_order_at_their_deadlines():
    clock = ManualClock(now_ms=1_000)
    fired = []

    def note(name):
        fired.append((name, clock.monotonic(), clock.now_ms()))

    clock.call_later(0.3, note, "b")
    clock.call_later(0.1, note, "a")
    cancelled = clock.call_later(0.2, note, "never")
    cancelled.cancel()
    assert cancelled.cancelled()
    clock.call_later(0.3, note, "c")  # same deadline: in the order scheduled
    assert clock.pending_timers == 3
    clock.advance(99)
    assert fired == []
    clock.advance(201)
    assert fired == [("a", 0.1, 1_100), ("b", 0.3, 1_300), ("c", 0.3, 1_300)]
    assert (clock.monotonic(), clock.now_ms(), clock.pending_timers) == (0.3, 1_300, 0)


def test_manual_timers_scheduled_by_a_timer_run_within_the_same_advance():
    clock = ManualClock()
    fired = []

    def again(n):
        fired.append(clock.monotonic())
        if n:
            clock.call_later(0.25, again, n - 1)

    clock.call_later(0.25, again, 3)
    clock.advance(900)
    assert fired == [0.25, 0.5, 0.75]
    clock.advance(100)
    assert fired == [0.25, 0.5, 0.75, 1.0]


def test_manual_deadlines_add_up_exactly():
    clock = ManualClock()
    fired = []
    clock.advance(6_000)
    clock.call_later(30.0, fired.append, "due")
    clock.advance(29_999)
    assert fired == []
    clock.advance(1)  # 6 s + 29.999 s + 1 ms is 36 s, not 35.999999...
    assert fired == ["due"]


def test_system_clock_timers_run_on_the_event_loop():
    async def main():
        done = asyncio.get_running_loop().create_future()
        handle = Clock().call_later(0, done.set_result, "ran")
        assert await asyncio.wait_for(done, 5) == "ran"
        assert not handle.cancelled()
    asyncio.run(main())
