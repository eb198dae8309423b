"""Event-loop lag: how late the loop runs a callback it was asked to run at a given time.

Every `interval` seconds a callback is scheduled with `call_later`; when it runs, the
difference between the time it ran and the time it was due is one lag sample. A loop
that only waits on the network has lags of tens of microseconds (up to a millisecond on
uvloop, whose timers have millisecond resolution); a request handler that
blocks the loop (a disk read, a long parse) shows up as a lag as long as the block.
Samples go into fixed buckets (no allocation per sample), so the monitor costs one timer
callback per interval and nothing per request. While the loop's thread is idle (under
BUSY_FRACTION of the wall time on the CPU since the previous tick, beyond OWN_WAKE_S for
the tick's own wake-up) the next tick comes after `idle_interval` instead: every wake-up of an idle process costs CPU, and 50 ticks a
second were most of an idle broker's wake-ups. A loop with nothing to do has no lag to
speak of; the first busy interval brings the short one back.

`report()` returns the percentiles since the previous report and starts a new window;
the broker logs it on SIGUSR1 (`bench/latency.py` reads it from there). It is also the
honest equivalent of Kafka's request-handler idle ratio for the metrics endpoint.

Owned by the event loop it watches; `start`/`stop` from that loop only.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable

from strom.clock import Clock

log = logging.getLogger(__name__)

# bucket upper bounds in milliseconds; the last bucket holds everything above
BUCKETS_MS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# the loop's thread on the CPU for at least this fraction of the time since the last tick:
# busy, sample every `interval`; below it, every `idle_interval`
BUSY_FRACTION = 0.01
# CPU not counted towards it: the tick's own wake-up, which on a virtual machine can cost
# a millisecond (more than 1 % of a 20 ms interval: the monitor would keep itself busy)
OWN_WAKE_S = 0.002


class LoopLagMonitor:
    bounds_ms = BUCKETS_MS

    def __init__(self, clock: Clock, interval: float = 0.02, idle_interval: float = 1.0,
                 cpu_time: Callable[[], float] = time.thread_time) -> None:
        self.clock = clock  # its monotonic() measures; the loop's own timers schedule
        self.interval = interval
        self.idle_interval = max(idle_interval, interval)
        self._last_tick = (0.0, 0.0)  # (wall, CPU) when the last tick was scheduled
        # the CPU time of the loop's thread (read on that thread): busy = CPU / wall time
        self.cpu_time = cpu_time
        self._idle_from: tuple[float, float] | None = None
        self._idle = 1.0
        # since start, never reset (the metrics endpoint's histogram)
        self.total_counts = [0] * (len(BUCKETS_MS) + 1)
        self.total_ms = 0.0
        self._counts = [0] * (len(BUCKETS_MS) + 1)
        self._max_ms = 0.0
        self._samples = 0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle_from = self._last_tick = (self.clock.monotonic(), self.cpu_time())
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        # the clock's monotonic time, not loop.time(): uvloop's clock has millisecond
        # resolution and is read once per loop iteration, which would hide every lag
        # below a millisecond
        now, cpu = self.clock.monotonic(), self.cpu_time()
        wall0, cpu0 = self._last_tick
        self._last_tick = (now, cpu)
        idle = now > wall0 and cpu - cpu0 - OWN_WAKE_S < BUSY_FRACTION * (now - wall0)
        interval = self.idle_interval if idle else self.interval
        self._due = now + interval
        self._handle = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        self.record((self.clock.monotonic() - self._due) * 1000.0)
        self._schedule()

    def record(self, lag_ms: float) -> None:
        lag_ms = max(0.0, lag_ms)
        bucket = bisect.bisect_left(BUCKETS_MS, lag_ms)
        self._counts[bucket] += 1
        self.total_counts[bucket] += 1
        self.total_ms += lag_ms
        self._samples += 1
        if lag_ms > self._max_ms:
            self._max_ms = lag_ms

    def idle_fraction(self, min_window_s: float = 1.0) -> float:
        """The fraction of wall time the loop's thread spent off the CPU since the previous
        call at least `min_window_s` ago (waiting for the network or a timer): the honest
        equivalent of Kafka's request-handler and network-processor idle ratios, for one
        loop does both jobs. Called on the loop's thread (the endpoint's scrape)."""
        if self._idle_from is None:
            return self._idle
        wall, cpu = self.clock.monotonic(), self.cpu_time()
        wall0, cpu0 = self._idle_from
        if wall - wall0 >= min_window_s:
            self._idle = min(1.0, max(0.0, 1.0 - (cpu - cpu0) / (wall - wall0)))
            self._idle_from = (wall, cpu)
        return self._idle

    def _percentile(self, p: float) -> float | None:
        """The upper bound of the bucket holding the p-th percentile (an upper estimate),
        never above the largest sample."""
        if not self._samples:
            return None
        rank = p / 100.0 * self._samples
        seen = 0
        for i, count in enumerate(self._counts):
            seen += count
            if seen >= rank and count:
                bound = BUCKETS_MS[i] if i < len(BUCKETS_MS) else self._max_ms
                return round(min(bound, self._max_ms), 3)
        return round(self._max_ms, 3)

    def report(self) -> dict:
        """Percentiles of the lag since the last report (in ms), then a new window."""
        result = {"samples": self._samples, "interval_ms": self.interval * 1000,
                  "p50_ms": self._percentile(50), "p99_ms": self._percentile(99),
                  "max_ms": round(self._max_ms, 3)}
        self._counts = [0] * len(self._counts)
        self._max_ms = 0.0
        self._samples = 0
        return result
