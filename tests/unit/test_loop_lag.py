"""strom.server.loop_lag: the event-loop lag monitor's percentiles and its timer."""

from __future__ import annotations

import asyncio
import time

from strom.server.loop_lag import LoopLagMonitor


def test_percentiles_are_bucket_bounds_capped_by_the_max():
    m = LoopLagMonitor()
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


def test_a_blocked_loop_shows_up_as_lag():
    async def main():
        m = LoopLagMonitor(interval=0.005)
        m.start()
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # the loop is blocked: the next tick runs late by about this much
        await asyncio.sleep(0.05)
        m.stop()
        return m.report()

    r = asyncio.run(main())
    assert r["samples"] >= 2
    assert r["max_ms"] >= 150  # a lower bound: the tick cannot run before the block ends
