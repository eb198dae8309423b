"""The max waits of parked fetches, under one loop timer.

A tailing consumer's Fetch is parked until data arrives or its max wait
(`fetch.wait.max.ms`, typically 500 ms) passes (`ReplicaManager.park`, or a future
`ReplicaManager._fetch` awaits: a follower's, or a consumer's on the full path), and nearly
every one is woken by data long before that: a consumer tailing a partition at 2,000
records/s parks 2,000 times a second. A loop timer per parked fetch, armed and then
cancelled, cost ~1.7 µs of the ~40 µs the broker's code spends per produce-and-fetch round
trip; an entry in a heap costs ~0.1 µs.

`FetchDeadlines` keeps (deadline, sequence, call) entries in a heap and one timer at the
earliest deadline of a call still parked; a call is anything with `done()` and
`set_result(True)`, a `ParkedCall` or an asyncio future. A call woken early is not taken
out (that would cost what the timer did): it stays until its deadline passes, when it is
dropped unseen, or until the heap holds `PURGE_AT` entries (or twice the calls still
parked at the last sweep, whichever is more), when the finished ones are swept out at once.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Protocol

PURGE_AT = 4096  # entries in the heap that trigger a sweep of the finished calls
# uvloop's clock counts milliseconds: a deadline within one of the loop's time is due
CLOCK_RESOLUTION_S = 0.001


class Expiring(Protocol):
    def done(self) -> bool: ...

    def set_result(self, expired: bool | None) -> None: ...


class FetchDeadlines:
    __slots__ = ("_loop", "_heap", "_seq", "_timer", "_timer_at", "_purge_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Expiring]] = []
        self._seq = 0  # ties broken by arrival, never by comparing calls
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._purge_at = PURGE_AT

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, call: Expiring, timeout_s: float) -> None:
        """`call.set_result(True)` once `timeout_s` has passed, unless the call is done by
        then."""
        deadline = self._loop.time() + timeout_s
        heap = self._heap
        if len(heap) >= self._purge_at:
            self._purge()
        self._seq += 1
        heapq.heappush(heap, (deadline, self._seq, call))
        # armed whenever a call is parked, at or before the earliest parked one's deadline
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        heap = self._heap
        try:
            due = self._loop.time() + CLOCK_RESOLUTION_S
            while heap and heap[0][0] <= due:
                call = heapq.heappop(heap)[2]
                if not call.done():  # woken by data meanwhile, or cancelled
                    call.set_result(True)  # (it may park anew)
        finally:  # the calls left are still timed, whatever happened
            while heap and heap[0][2].done():
                heapq.heappop(heap)
            if heap and (self._timer is None or heap[0][0] < self._timer_at):
                self._arm(heap[0][0])

    def _purge(self) -> None:
        heap = self._heap
        heap[:] = [entry for entry in heap if not entry[2].done()]
        heapq.heapify(heap)
        self._purge_at = max(PURGE_AT, 2 * len(heap))
        if not heap and self._timer is not None:
            self._timer.cancel()
            self._timer = None
