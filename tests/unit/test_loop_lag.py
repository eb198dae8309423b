"""strom.server.loop_lag: the event-loop lag monitor's percentiles and its timer."""

from __future__ import annotations

import asyncio

from strom.clock import ManualClock
from strom.server.loop_lag import LoopLagMonitor


def test_percentiles_are_bucket_bounds_capped_by_the_max():
    m = LoopLagMonitor(ManualClock())
    assert m.report() == {"samples": 0, "interval_ms": 20.0, "p50_ms": None, "p99_ms": None,
                          "max_ms": 0.0}
    for _ in range(98):
        m.record(0.01)
    m.record(3.0)
    m.record(7000.0)  # beyond the last bucket
    r = m.report()
    assert r["samples"] == 100 and r["p50_ms"] == 0.05 and r["max_ms"] == 7000.0
    assert r["p99_ms"] == 5  # 3 ms falls in the (2, 5] bucket
    m.record(1.5)
    r = m.report()  # a new window: only the last sample
    assert r["samples"] == 1 and r["p50_ms"] == 1.5 and r["p99_ms"] == 1.5
    m.record(-1)  # a clock step backwards counts as no lag
    assert m.report()["max_ms"] == 0.0


def test_a_late_tick_is_measured_on_the_clock():
    """The loop's timer runs the tick; the clock says how late it is. A manual clock moved
    200 ms past a tick's due time (as a blocked loop would) gives a lag of exactly that."""
    clock = ManualClock()

    async def main():
        m = LoopLagMonitor(clock, interval=0.005)
        m.start()
        await asyncio.sleep(0.02)  # a few ticks on time (the manual clock stands still)
        on_time = m.report()
        clock.advance(200)  # the next tick, due 5 ms after the last one, runs 195 ms late
        await asyncio.sleep(0.02)
        m.stop()
        return on_time, m.report()

    on_time, late = asyncio.run(main())
    assert on_time["samples"] >= 1 and on_time["max_ms"] == 0.0
    assert late["max_ms"] == 195.0


def test_an_idle_loop_is_sampled_every_idle_interval_a_busy_one_every_interval():
    """The next tick's delay follows the loop thread's CPU since the last tick: under 1 %
    of the wall time (beyond 2 ms for the tick's own wake-up), `idle_interval`; at or
    above it, `interval`."""
    clock = ManualClock()
    cpu = [0.0]
    delays: list[float] = []

    class Loop:  # records the delays; the test runs the ticks itself
        def call_later(self, delay, callback):
            delays.append(delay)
            return None

    m = LoopLagMonitor(clock, interval=0.02, idle_interval=1.0, cpu_time=lambda: cpu[0])
    m._loop = Loop()
    m._last_tick = (clock.monotonic(), 0.0)
    clock.advance(1000)  # 1 s with no CPU: idle
    m._tick()
    clock.advance(20)
    cpu[0] += 0.005  # 5 ms of CPU in 20 ms: busy
    m._tick()
    clock.advance(20)
    cpu[0] += 0.0001  # 0.1 ms in 20 ms (0.5 %): idle again
    m._tick()
    clock.advance(1000)
    cpu[0] += 0.0015  # a slow wake-up of the tick itself, nothing else: still idle
    m._tick()
    clock.advance(1000)
    cpu[0] += 0.015  # 15 ms in 1 s: busy
    m._tick()
    assert delays == [1.0, 0.02, 1.0, 1.0, 0.02]
    assert m.report()["samples"] == 5


def test_the_ticks_own_wake_up_does_not_keep_a_short_interval():
    """On a host where waking an idle process costs a millisecond, 1 ms per 20 ms tick is
    5 %: without the allowance the monitor counted its own wake-ups as work and never
    went to the idle interval."""
    clock = ManualClock()
    cpu = [0.0]
    delays: list[float] = []

    class Loop:
        def call_later(self, delay, callback):
            delays.append(delay)

    m = LoopLagMonitor(clock, interval=0.02, idle_interval=1.0, cpu_time=lambda: cpu[0])
    m._loop = Loop()
    m._last_tick = (clock.monotonic(), 0.0)
    clock.advance(20)
    cpu[0] += 0.001
    m._tick()
    assert delays == [1.0]


def test_idle_interval_is_never_shorter_than_interval():
    assert LoopLagMonitor(ManualClock(), interval=2.0, idle_interval=1.0).idle_interval == 2.0
