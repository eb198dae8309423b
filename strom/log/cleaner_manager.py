"""Which log to clean next, the cleaner threads, and `cleaner-offset-checkpoint`
(Kafka's LogCleaner and LogCleanerManager).

Choosing a log (on the owner of the logs, the event loop: it reads live PartitionLogs):
for each log whose `cleanup.policy` has `compact`, not being cleaned and not marked
uncleanable,

    first dirty offset   its cleaner checkpoint; the log start offset when there is none, or
                         it is below the log start offset or above the log end offset
    first uncleanable    min(last stable offset (at most the high watermark, and never past
                         the first offset of an open transaction), base offset of the active
                         segment, base offset of the first dirty segment whose largest
                         timestamp is newer than now - min.compaction.lag.ms), rounded down
                         to the base offset of the segment holding it
    clean bytes          size of the segments below the first dirty offset
    cleanable bytes      size of the segments from the first dirty offset to the first
                         uncleanable offset
    dirty ratio          cleanable / (clean + cleanable)
    must clean now       the first batch of the first dirty segment is older than
                         now - max.compaction.lag.ms, and there are cleanable bytes

Logs whose ratio is above `min.cleanable.dirty.ratio`, or that must be cleaned now, are
candidates; the one with the highest ratio is cleaned (cleaner.py). Its new first dirty
offset goes to `<log dir>/cleaner-offset-checkpoint` (the offset-checkpoint format of
checkpoint.py).

Threads and ownership: `log.cleaner.threads` daemon threads (none when
`log.cleaner.enable=false`) each loop: choose a log, clean it, or sleep
`log.cleaner.backoff.ms` when there is nothing to clean. Everything that reads or changes a
PartitionLog runs on its owner through `run_on_owner` (the broker passes a function that
schedules the call on the event loop and waits for it; tests run it in place): choosing the
log, and the swap of each cleaned group (`PartitionLog.replace_segments`). The cleaning
itself reads only segment files, through its own descriptors: with `worker_processes`
(the broker's case) each thread hands it to its own child process (cleaner_worker.py), so
the key map and the copy never hold the event loop's GIL, and the thread only waits and
runs the swaps; without (tests, the in-process bench) the thread cleans in place. Each
worker throttles its IO to its share of `log.cleaner.io.max.bytes.per.second` (the rate
divided by the threads); in place, the threads share one throttle. This class's own state
(checkpoints, logs in progress, uncleanable logs) is guarded by `self._lock`.

A failure while cleaning a log (an OSError such as ENOSPC, a corrupt batch) marks that log
uncleanable until the broker restarts and is logged; the broker keeps serving it, and the
other logs are still cleaned. A `cleaner-offset-checkpoint` that cannot be written takes its
log dir offline (KIP-112), and logs in an offline dir are not cleaned.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from strom.clock import Clock
from strom.config import BrokerConfig
from strom.log import checkpoint
from strom.log.cleaner import (
    CleanConfig,
    Cleaner,
    CleanerAborted,
    CleanRequest,
    CleanResult,
    SegmentInfo,
    Throttler,
)
from strom.log.cleaner_worker import CleanerWorker
from strom.log.manager import LogManager
from strom.log.partition_log import PartitionLog
from strom.log.swap import StepHook, no_step

log = logging.getLogger(__name__)

CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
T = TypeVar("T")
TopicPartition = tuple[str, int]


def run_in_place(fn: Callable[[], T]) -> T:
    return fn()


class LogCleanerManager:
    def __init__(self, logs: LogManager, config: BrokerConfig, clock: Clock,
                 run_on_owner: Callable[[Callable[[], Any]], Any] = run_in_place,
                 worker_processes: bool = False) -> None:
        self.logs = logs
        self.worker_processes = worker_processes
        self.workers: list[CleanerWorker] = []
        self.config = config
        self.clock = clock
        self.run_on_owner = run_on_owner
        self.stop_event = threading.Event()
        self.throttler = Throttler(config.get("log.cleaner.io.max.bytes.per.second"),
                                   self.stop_event.wait)
        self.threads = max(config.get("log.cleaner.threads"), 1)
        self.map_memory = config.get("log.cleaner.dedupe.buffer.size") // self.threads
        self.step: StepHook = no_step  # a test hook for the swap steps
        self._lock = threading.Lock()
        self._checkpoint_io = threading.Lock()  # one checkpoint write at a time, in order
        self._checkpoints: dict[str, dict[TopicPartition, int]] = {}
        self._in_progress: set[TopicPartition] = set()
        self.uncleanable: set[TopicPartition] = set()
        self._threads: list[threading.Thread] = []
        self._live: set[TopicPartition] = set(logs.logs)  # logs seen by the last choice
        self._cleaned_log: dict[TopicPartition, object] = {}  # the log each entry is for
        self.rounds = 0  # cleaning rounds done (for tests and the bench)
        for d in logs.log_dirs:
            self._checkpoints[d] = checkpoint.read_offsets(
                os.path.join(d, CLEANER_OFFSET_CHECKPOINT))

    # --- threads -----------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.get("log.cleaner.enable"):
            log.info("Log cleaner disabled (log.cleaner.enable=false)")
            return
        for i in range(self.config.get("log.cleaner.threads")):
            worker = None
            if self.worker_processes:
                # its process starts with the first round (a broker with nothing to
                # compact never pays for it)
                worker = CleanerWorker(f"kafka-log-cleaner-worker-{i}", self.stop_event)
                self.workers.append(worker)
            t = threading.Thread(target=self._run, args=(worker,),
                                 name=f"kafka-log-cleaner-thread-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def reconfigure(self) -> None:
        """Dynamic broker configs changed: the IO rate and the key map memory apply from
        the next round, the back-off from the next sleep (the thread count at restart)."""
        self.throttler.rate = self.config.get("log.cleaner.io.max.bytes.per.second")
        self.map_memory = self.config.get("log.cleaner.dedupe.buffer.size") // self.threads

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the threads (a round in progress is abandoned: its `.cleaned` files are
        removed). Blocking: call it off the event loop, which must keep running so that
        a thread waiting on it can finish."""
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        for worker in self.workers:
            worker.close()
        self.workers.clear()

    def _run(self, worker: CleanerWorker | None) -> None:
        while not self.stop_event.is_set():
            try:
                cleaned = self.clean_once(worker)
            except Exception:
                log.exception("Log cleaner round failed")
                cleaned = False
            if not cleaned:
                self.stop_event.wait(self.config.get("log.cleaner.backoff.ms") / 1000)

    # --- one round ------------------------------------------------------------------------
    def clean_once(self, worker: CleanerWorker | None = None) -> CleanResult | None:
        """Clean the filthiest log, if one needs it (in `worker`'s process, or in place);
        None if none did (or on shutdown)."""
        req = self.run_on_owner(self.grab_filthiest)
        if req is None:
            return None
        tp = (req.topic, req.partition)
        try:
            if worker is not None:
                result = worker.clean(req, self._swap, self.map_memory,
                                      self.throttler.rate / self.threads, self.clock.now_ms())
            else:
                result = Cleaner(self.clock, self.map_memory, self.throttler,
                                 self.stop_event).clean(req, self._swap)
        except CleanerAborted as e:
            log.info("Cleaning of %s-%d stopped: %s", req.topic, req.partition, e)
            return None
        except Exception:
            if not self.run_on_owner(lambda: self.logs.get(*tp) is req.log):
                log.info("Cleaning of %s-%d stopped: the log was deleted", *tp)
                return None
            log.exception("Cleaning of %s-%d failed; it is marked uncleanable and will not "
                          "be cleaned again until the broker restarts", *tp)
            with self._lock:
                self.uncleanable.add(tp)
            return None
        finally:
            with self._lock:
                self._in_progress.discard(tp)
        if not result.groups:
            return None  # nothing could be mapped: wait for the backoff
        with self._lock:
            self._cleaned_log[tp] = req.log
        self._set_checkpoint(tp, result.end_offset)
        stats = result.stats
        log.info("Cleaned %s-%d up to offset %d in %d groups: %.1f MB read, %.1f MB written, "
                 "%d of %d records kept, %.1f MB/s, ratio was %.2f",
                 req.topic, req.partition, result.end_offset, result.groups,
                 stats.bytes_read / 1e6, stats.bytes_written / 1e6, stats.records_written,
                 stats.records_read, stats.bytes_read / 1e6 / stats.elapsed,
                 req.cleanable_ratio)
        self.rounds += 1
        return result

    def _swap(self, req: CleanRequest, group: list[SegmentInfo], base: int) -> bool:
        def on_owner() -> bool:
            plog = self.logs.get(req.topic, req.partition)
            if plog is None or plog is not req.log or plog.truncations != req.truncations:
                # as Kafka (truncation aborts cleaning): a truncation inside the group, even
                # with its segments all still there, removed records its cleaned copy holds
                return False
            return plog.replace_segments([s.segment for s in group], base, self.step)
        return self.run_on_owner(on_owner)

    # --- choosing a log (on the owner) -------------------------------------------------------
    def grab_filthiest(self) -> CleanRequest | None:
        now = self.clock.now_ms()
        best: CleanRequest | None = None
        with self._lock:
            busy = self._in_progress | self.uncleanable
            self._live = set(self.logs.logs)
        for tp, plog in list(self.logs.logs.items()):
            if tp in busy or not plog.config.compact or plog.deleted or plog.offline:
                continue
            d = self.logs.dir_of(*tp)
            if d is None:
                continue
            req = self.log_to_clean(plog, d, now)
            if req is None or req.cleanable_bytes <= 0:
                continue
            if not (req.need_compaction_now or
                    req.cleanable_ratio > plog.config.get("min.cleanable.dirty.ratio")):
                continue
            if best is None or req.cleanable_ratio > best.cleanable_ratio:
                best = req
        if best is not None:
            with self._lock:
                self._in_progress.add((best.topic, best.partition))
        return best

    def log_to_clean(self, plog: PartitionLog, dir_: str, now: int) -> CleanRequest | None:
        tp = (plog.topic, plog.partition)
        with self._lock:
            stored = self._checkpoints.get(dir_, {}).get(tp)
            if self._cleaned_log.get(tp, plog) is not plog:
                stored = None  # written for a log deleted since (a topic made again)
        first_dirty = plog.log_start_offset
        if stored is not None:
            if stored < plog.log_start_offset or stored > plog.log_end_offset:
                log.info("Resetting the first dirty offset of %s-%d to the log start offset "
                         "%d: the checkpointed offset %d is out of range", *tp,
                         plog.log_start_offset, stored)
            else:
                first_dirty = stored
        closed = plog.segments[:-1]
        uncleanable = min(plog.last_stable_offset, plog.active_segment.base_offset)
        min_lag = plog.config.get("min.compaction.lag.ms")
        if min_lag > 0:
            for seg in closed:
                if seg.next_offset <= first_dirty:
                    continue
                if seg.max_timestamp > now - min_lag:
                    uncleanable = min(uncleanable, seg.base_offset)
                    break
        uncleanable = max(uncleanable, first_dirty)
        # as Kafka's calculateCleanableBytes: down to the base of the segment holding it,
        # so a round cleans whole segments (never a part above the high watermark)
        holding = [s.base_offset for s in closed if s.base_offset <= uncleanable]
        if uncleanable < plog.active_segment.base_offset and holding:
            uncleanable = max(holding[-1], first_dirty)
        clean_bytes = sum(s.size for s in plog.segments if s.next_offset <= first_dirty)
        cleanable = sum(s.size for s in closed
                        if s.next_offset > first_dirty and s.base_offset < uncleanable)
        max_lag = max(plog.config.get("max.compaction.lag.ms"), 0)
        need_now = False
        if cleanable > 0 and max_lag < (1 << 63) - 1:
            firsts = [s.first_batch_timestamp for s in closed
                      if s.next_offset > first_dirty and s.base_offset < uncleanable
                      and s.first_batch_timestamp is not None and s.first_batch_timestamp > 0]
            need_now = bool(firsts) and min(firsts) < now - max_lag
        infos = tuple(SegmentInfo(s.base_offset, s.log_path, s.size, s.next_offset,
                                  s.max_timestamp, s.first_batch_timestamp, len(s.index),
                                  len(s.time_index), s) for s in closed)
        producers = plog.producer_state.producers
        last_batches = {pid: e.batches[-1].last_offset
                        for pid, e in producers.items() if e.batches}
        marker_epochs = {pid: e.epoch for pid, e in producers.items() if not e.batches}
        cfg = plog.config
        return CleanRequest(
            plog.topic, plog.partition, plog.dir, infos, first_dirty, uncleanable,
            CleanConfig(cfg.get("delete.retention.ms"), cfg.get("segment.bytes"),
                        cfg.get("segment.index.bytes"), cfg.get("index.interval.bytes")),
            last_batches, clean_bytes, cleanable, need_now, plog.truncations, plog,
            # every entry overlapping the segments a round may read, from the first one (the
            # copy reads them all)
            tuple(plog.collect_aborted_txns(plog.segments[0].base_offset, uncleanable)),
            marker_epochs)

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint_of(self, topic: str, partition: int) -> int | None:
        d = self.logs.dir_of(topic, partition)
        with self._lock:
            return self._checkpoints.get(d or "", {}).get((topic, partition))

    def _set_checkpoint(self, tp: TopicPartition, offset: int) -> None:
        d = self.logs.dir_of(*tp) or ""
        # cleaner threads write the same file (and its .tmp): one at a time, each writing
        # the entries as they are when its turn comes, so the file never goes back
        with self._checkpoint_io:
            with self._lock:
                entries = self._checkpoints.setdefault(d, {})
                entries[tp] = offset
                live = self._live
                for gone in [k for k in entries if k not in live]:
                    del entries[gone]  # deleted topics
                snapshot = dict(entries)
            if not d:
                return
            try:
                checkpoint.write_offsets(os.path.join(d, CLEANER_OFFSET_CHECKPOINT),
                                         snapshot)
            except OSError as e:  # KIP-112: as Kafka's LogDirFailureChannel, the dir fails
                log.error("Writing %s in %s failed: %s", CLEANER_OFFSET_CHECKPOINT, d, e)
                self.run_on_owner(lambda e=e: self.logs.mark_dir_offline(d, e))

