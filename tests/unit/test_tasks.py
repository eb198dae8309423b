"""strom.tasks: supervised background tasks, and the long-lived tasks that use it (the ISR
expiry, the group sweeper, the broker's periodic jobs): a step that raises once is logged
with its traceback and the task keeps running; an essential task that ends fails the
broker loudly. No sockets."""

from __future__ import annotations

import asyncio
import logging

from strom.clock import ManualClock
from strom.config import BrokerConfig
from strom.coordinator.group_coordinator import GroupCoordinator
from strom.replication.replica_manager import ReplicaManager
from strom.server.broker import Broker
from strom.tasks import backoff_s, essential, run_forever, run_until_done, spawn


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(condition, timeout: float = 10.0) -> None:
    """Wait (bounded) until `condition()` holds, yielding to the loop meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


class FailsOnce:
    """A step that raises on its first call and counts every call."""

    def __init__(self, result=None) -> None:
        self.calls = 0
        self.result = result

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        return self.result


def failures_logged(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage() and r.exc_info is not None]


# --- the helpers ---------------------------------------------------------------------------


def test_backoff_doubles_per_failure_and_is_bounded():
    assert backoff_s(1.0, 0) == 1.0
    assert backoff_s(1.0, 1) == 2.0
    assert backoff_s(1.0, 2) == 4.0
    assert backoff_s(1.0, 100) == 30.0
    assert backoff_s(0.0, 1) > 0  # a failing step never spins
    assert backoff_s(60.0, 5) == 60.0  # never shorter than the interval


def test_periodic_step_that_raises_once_is_logged_and_keeps_running(caplog):
    step = FailsOnce()

    async def main():
        task = spawn(run_forever(step, "Test step", 0.0), "test-step")
        await until(lambda: step.calls >= 3)
        assert not task.done()
        task.cancel()

    run(main())
    [record] = failures_logged(caplog, "Test step failed (1 in a row)")
    assert record.exc_info[0] is RuntimeError


def test_async_step_that_raises_once_is_logged_and_keeps_running(caplog):
    step = FailsOnce()

    async def async_step():
        step()

    async def main():
        task = spawn(run_forever(async_step, "Async step", 0.0), "async-step")
        await until(lambda: step.calls >= 2)
        task.cancel()

    run(main())
    assert failures_logged(caplog, "Async step failed")


def test_run_until_done_retries_until_the_job_succeeds(caplog):
    step = FailsOnce(result=None)

    async def job():
        step()

    async def main():
        await run_until_done(job, "Loading", retry_s=0.01)

    run(main())
    assert step.calls == 2
    assert failures_logged(caplog, "Loading failed")


def test_spawned_task_failure_is_logged_and_tracked_until_done(caplog):
    tracked: set[asyncio.Task] = set()

    async def fails():
        raise ValueError("bad")

    async def main():
        task = spawn(fails(), "one-shot", tracked)
        assert task in tracked
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done-callbacks run
        assert not tracked

    run(main())
    [record] = failures_logged(caplog, "Task one-shot failed")
    assert record.exc_info[0] is ValueError


def test_essential_task_that_ends_is_reported_as_fatal_to_the_loop():
    reported: list[dict] = []

    async def fails():
        raise RuntimeError("gone")

    async def returns():
        return None

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        essential(spawn(fails(), "must-run"))
        essential(spawn(returns(), "must-run-too"))
        cancelled = essential(spawn(asyncio.sleep(60), "cancelled"))
        await asyncio.sleep(0)
        cancelled.cancel()
        await until(lambda: len(reported) == 2)
        await asyncio.sleep(0.05)

    run(main())
    assert all(ctx["fatal"] for ctx in reported)
    messages = sorted(ctx["message"] for ctx in reported)
    assert messages == ["Essential task must-run ended (RuntimeError: gone)",
                        "Essential task must-run-too ended (it returned)"]


# --- the tasks that use them ---------------------------------------------------------------


class _Cache:
    brokers: dict = {}
    topics: dict = {}

    def on_change(self, listener) -> None:
        pass

    def topic(self, name):
        return None


class _Partition:
    """Enough of replication.partition.Partition for the ISR check."""

    is_leader = True

    def __init__(self) -> None:
        self.isr_to_shrink = FailsOnce(result=None)


def test_isr_expiry_keeps_running_after_a_failure(caplog):
    """Before: one exception in the ISR check ended its task for good, and nothing was
    logged: no ISR ever shrank again on this broker."""
    config = BrokerConfig({"replica.lag.time.max.ms": "100"})
    rm = ReplicaManager(1, config, ManualClock(), logs=None, cache=_Cache())
    partition = _Partition()
    rm.partitions[("t", 0)] = partition

    async def main():
        rm.start()
        await until(lambda: partition.isr_to_shrink.calls >= 2)
        assert not rm._isr_task.done()
        await rm.stop()

    run(main())
    assert failures_logged(caplog, "ISR check failed")


def test_group_sweeper_keeps_running_after_a_failure(caplog, monkeypatch):
    """Before: the group sweeper's task died on its first exception: no member of any
    group ever expired again."""
    config = BrokerConfig({})
    replicas = type("Replicas", (), {"partitions": {},
                                     "add_txn_marker_listener": lambda self, cb: None})()
    coordinator = GroupCoordinator(1, config, ManualClock(), _Cache(), None, replicas)
    expire = FailsOnce()
    monkeypatch.setattr(coordinator, "_expire_members", expire)

    async def main():
        coordinator.start()
        await until(lambda: expire.calls >= 2)
        assert not coordinator._sweeper.done()
        coordinator.stop()

    run(main())
    assert failures_logged(caplog, "Group sweeper failed")


def test_broker_periodic_job_failure_is_logged_and_retried(caplog, tmp_path):
    broker = Broker(BrokerConfig({"log.dirs": str(tmp_path)}))
    job = FailsOnce()

    async def async_job():
        job()

    async def main():
        broker._every(0.0, async_job, "test-job")
        await until(lambda: job.calls >= 2)
        for task in broker.tasks:
            task.cancel()

    run(main())
    assert failures_logged(caplog, "Periodic test-job failed")


def test_broker_fails_loudly_when_an_essential_task_ends(caplog, tmp_path):
    broker = Broker(BrokerConfig({"log.dirs": str(tmp_path)}))

    async def fails():
        raise RuntimeError("invariant broken")

    async def main():
        asyncio.get_running_loop().set_exception_handler(broker._on_loop_error)
        essential(spawn(fails(), "replica-fetcher-2"))
        await asyncio.wait_for(broker.stopping.wait(), 10)

    run(main())
    assert broker.failure == ("Essential task replica-fetcher-2 ended "
                              "(RuntimeError: invariant broken)")
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical and "shutting down the broker" in critical[0].getMessage()
    # asyncio's own report carries the traceback
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
