"""Supervised asyncio tasks: nothing fails silently in a forgotten task.

Every task the broker creates goes through one of these:

  spawn(coro, name, tracked)   a tracked task (kept in `tracked` until it ends, if given)
                               whose failure is logged with its traceback by a
                               done-callback; for short jobs and for tasks that handle
                               their own errors.
  off_loop(job, *args, name, tracked)
                               a blocking job (fsync, unlink) in the default executor, as
                               a spawned task; at once when no loop runs (tools, tests).
  run_forever(step, name, interval_s)
                               the body of a long-lived task: calls `step()` again and
                               again (`interval_s` apart); an exception is logged with its
                               traceback and the step runs again after a back-off that
                               doubles per failure in a row (up to MAX_BACKOFF_S) and
                               resets after a success. Only cancellation ends it.
  run_until_done(step, name, retry_s)
                               a one-shot job that must eventually succeed (loading a
                               partition's state): retried the same way until it returns.
  essential(task)              a task the broker cannot run without (it must end only
                               when cancelled): if it ends otherwise, the failure is
                               reported to the loop's exception handler with
                               `"fatal": True`; the broker's handler logs it and stops
                               the broker with a non-zero exit status (see server/broker.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MIN_BACKOFF_S = 0.1


def log_failure(task: asyncio.Task) -> None:
    """Done-callback: log the exception a task ended with (cancellation is not one)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("Task %s failed", task.get_name(), exc_info=exc)


def spawn(coro: Coroutine[Any, Any, Any], name: str,
          tracked: set[asyncio.Task] | None = None) -> asyncio.Task:
    """Create a task named `name` whose failure is logged; kept in `tracked` until done."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    if tracked is not None:
        tracked.add(task)
        task.add_done_callback(tracked.discard)
    task.add_done_callback(log_failure)
    return task


def off_loop(job: Callable[..., Any], *args: Any, name: str,
             tracked: set[asyncio.Task] | None = None,
             on_os_error: Callable[[OSError], None] | None = None) -> asyncio.Task | None:
    """Run the blocking `job(*args)` in the default executor as a spawned task (tracked,
    its failure logged); without a running loop, run it now and return None. An OSError
    the job raises goes to `on_os_error`, on the loop, when given (a failed write taking
    its log dir offline, KIP-112), and is logged as any failure."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        job(*args)
        return None

    async def run_job() -> None:
        try:
            await loop.run_in_executor(None, job, *args)
        except OSError as e:
            if on_os_error is not None:
                on_os_error(e)
            raise

    return spawn(run_job(), name, tracked)


def backoff_s(interval_s: float, failures: int) -> float:
    """The pause before the next try after `failures` failures in a row."""
    if failures <= 0:
        return interval_s
    base = max(interval_s, MIN_BACKOFF_S)
    return min(base * (1 << min(failures, 16)), max(MAX_BACKOFF_S, interval_s))


async def run_forever(step: Callable[[], Awaitable[Any] | Any], name: str,
                      interval_s: float = 0.0) -> None:
    """Run `step` (a function or coroutine function) forever, `interval_s` apart, logging
    and backing off on failure. Cancellation ends it."""
    failures = 0
    while True:
        await asyncio.sleep(backoff_s(interval_s, failures))  # yields even at 0
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            log.exception("%s failed (%d in a row); next try in %.1f s", name, failures,
                          backoff_s(interval_s, failures))
        else:
            failures = 0


async def run_until_done(step: Callable[[], Awaitable[Any]], name: str,
                         retry_s: float = 1.0) -> None:
    """Await `step()` until it returns without an exception, logging each failure and
    backing off as `run_forever` does."""
    failures = 0
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            delay = backoff_s(retry_s, failures)
            log.exception("%s failed (%d in a row); next try in %.1f s", name, failures, delay)
            await asyncio.sleep(delay)


def essential(task: asyncio.Task) -> asyncio.Task:
    """Mark `task` as one the broker cannot run without; returns it."""
    task.add_done_callback(_essential_ended)
    return task


def _essential_ended(task: asyncio.Task) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "it returned"
    task.get_loop().call_exception_handler({
        "message": f"Essential task {task.get_name()} ended ({reason})",
        "exception": exc,
        "task": task,
        "fatal": True,
    })
