"""Time, passed to everything that reads it, so tests can move it.

`monotonic()` is the time base of every deadline, and `call_later` runs a callback once
that much of it has passed: on the event loop for the system clock, when `advance` passes
its deadline for the manual clock. Both are used on the event loop only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle(Protocol):
    """A callback scheduled with `Clock.call_later` (asyncio.TimerHandle is one)."""

    def cancel(self) -> None: ...

    def cancelled(self) -> bool: ...


class Clock:
    """The system clock: wall time in ms for timestamps, monotonic for intervals."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay_s: float, callback: Callable[..., Any], *args: Any
                   ) -> TimerHandle:
        """Run `callback(*args)` on the running event loop after `delay_s` seconds."""
        return asyncio.get_running_loop().call_later(delay_s, callback, *args)


class _ManualTimer:
    __slots__ = ("due_ms", "callback", "args", "_cancelled")

    def __init__(self, due_ms: int, callback: Callable[..., Any], args: tuple) -> None:
        self.due_ms = due_ms
        self.callback = callback
        self.args = args
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class ManualClock(Clock):
    """A clock that moves only when told to, in whole milliseconds (so deadlines add up
    exactly); its timers fire inside `advance`."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms
        self._mono_ms = 0
        self._timers: list[tuple[int, int, _ManualTimer]] = []
        self._seq = itertools.count()

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono_ms / 1000

    def call_later(self, delay_s: float, callback: Callable[..., Any], *args: Any
                   ) -> TimerHandle:
        """Due after `delay_s` rounded up to a whole millisecond."""
        timer = _ManualTimer(self._mono_ms + max(math.ceil(delay_s * 1000 - 1e-6), 0),
                             callback, args)
        heapq.heappush(self._timers, (timer.due_ms, next(self._seq), timer))
        return timer

    def advance(self, ms: int) -> None:
        """Move time forward by `ms`, running each timer that falls due on the way, in
        deadline order and with the clock at its deadline (timers they schedule within the
        step run too)."""
        end = self._mono_ms + ms
        while self._timers and self._timers[0][0] <= end:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled():
                continue
            self._move_to(max(due, self._mono_ms))
            timer.callback(*timer.args)
        self._move_to(end)

    def _move_to(self, mono_ms: int) -> None:
        self._now_ms += mono_ms - self._mono_ms
        self._mono_ms = mono_ms

    @property
    def pending_timers(self) -> int:
        """Timers scheduled and neither run nor cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled())
