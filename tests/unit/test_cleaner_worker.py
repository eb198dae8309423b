"""The cleaning of a log in a child process (strom.log.cleaner_worker): the same result as in
place, stopped cleanly between groups, and a worker that dies fails only its round."""

from __future__ import annotations

import glob
import os

from strom.log.cleaner_worker import CleanerWorker
from strom.log.records import Compression
from tests.unit.test_cleaner import DAY, Env


def history(env: Env) -> None:
    env.append((b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), roll=True)
    env.append((b"x", b"1"), (b"a", b"3"), compression=Compression.GZIP, roll=True)
    env.append((b"c", None), (b"x", b"2"), roll=True)  # a tombstone: gets a delete horizon
    env.append((b"b", b"2"), roll=True)
    env.append((b"d", b"1"))


def segment_files(env: Env) -> dict[str, bytes]:
    d = env.plog.dir
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(d, "*.log")))}


def test_a_log_cleaned_in_the_worker_equals_the_log_cleaned_in_place(tmp_path):
    here, there = Env(tmp_path / "here"), Env(tmp_path / "there")
    history(here)
    history(there)
    assert here.manager.clean_once() is not None
    worker = CleanerWorker("test-cleaner-worker", there.manager.stop_event)
    try:
        result = there.manager.clean_once(worker)
        assert result is not None and result.end_offset == 9 and result.groups == 1
        assert segment_files(there) == segment_files(here)
        assert there.records() == here.records() == [
            (5, b"a", b"3"), (6, b"c", None), (7, b"x", b"2"), (8, b"b", b"2"),
            (9, b"d", b"1")]
        assert there.manager.checkpoint_of("t", 0) == 9
        # a later round, past delete.retention.ms, drops the tombstone in both
        for env in (here, there):
            env.clock.advance(2 * DAY)
            env.append((b"e", b"1"), roll=True)
        here.manager.clean_once()
        there.manager.clean_once(worker)
        assert segment_files(there) == segment_files(here)
        assert (6, b"c", None) not in there.records()
    finally:
        worker.close()
    assert worker.pid is None


def test_a_stop_between_groups_abandons_the_round_and_its_cleaned_files(tmp_path):
    env = Env(tmp_path, segment_bytes=120)  # each segment is a group of its own
    for i in range(6):
        env.append((b"k", b"v%d" % i), (b"j%d" % i, b"w"), roll=True)
    before = env.records()
    worker = CleanerWorker("test-cleaner-worker", env.manager.stop_event)
    real_swap = env.manager._swap
    swaps = []

    def swap_then_stop(req, group, base):
        swaps.append(base)
        env.manager.stop_event.set()  # as a broker shutting down
        return real_swap(req, group, base)

    env.manager._swap = swap_then_stop
    try:
        assert env.manager.clean_once(worker) is None
        assert len(swaps) == 1  # the first group was swapped, no other
        assert glob.glob(os.path.join(env.plog.dir, "*.cleaned")) == []
        assert env.manager.checkpoint_of("t", 0) is None
        assert env.records() == before[1:]  # only k's first value went
        assert ("t", 0) not in env.manager.uncleanable
    finally:
        worker.close()


def test_a_worker_that_dies_fails_its_round_and_is_started_again(tmp_path):
    env = Env(tmp_path, segment_bytes=120)
    for i in range(4):
        env.append((b"k", b"v%d" % i), roll=True)
    before = env.records()
    worker = CleanerWorker("test-cleaner-worker", env.manager.stop_event)
    real_swap = env.manager._swap
    first_pid = []

    def swap_and_kill(req, group, base):
        first_pid.append(worker.pid)
        worker._process.kill()  # our own child, by its handle
        worker._process.wait(10)
        return real_swap(req, group, base)

    env.manager._swap = swap_and_kill
    try:
        assert env.manager.clean_once(worker) is None
        assert ("t", 0) in env.manager.uncleanable  # as any unexpected failure
        assert [r[2] for r in env.records()][-1] == before[-1][2]
        env.manager._swap = real_swap
        env.manager.uncleanable.clear()
        assert env.manager.clean_once(worker) is not None
        assert worker.pid not in (None, first_pid[0])
        assert [r[2] for r in env.records()] == [b"v3"]
    finally:
        worker.close()
