"""LogManager: the log directories, every PartitionLog in them, and their checkpoints.

On start it reads `meta.properties` (creating it on first start), the checkpoint files and
the clean-shutdown marker, then opens each `<topic>-<partition>` directory: after a clean
shutdown indexes are trusted (and rebuilt only if they fail the sanity check); after a crash
every segment past the recovery point is scanned and a torn tail is truncated. The marker is
removed once the broker runs, and written again by a clean `shutdown()`.

Periodic work (run by the broker's tasks, blocking parts in an executor): flushing logs
whose `flush.messages`/`flush.ms` ask for it, writing checkpoints, retention, producer id
expiration.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from strom.clock import Clock
from strom.config import TopicConfig
from strom.log import checkpoint, files
from strom.log.page_cache import PageCacheWindow
from strom.log.partition_log import PartitionLog
from strom.log.segment import NO_WINDOW, LogSegment, unlink_paths
from strom.protocol.errors import KafkaStorageError
from strom.tasks import off_loop

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
LOCK_FILE = ".lock"


class LogDirError(Exception):
    pass


def _check_dir(d: str) -> None:
    """Create log dir `d` if needed and check that this process may read and write it;
    OSError when it cannot be used."""
    if os.path.lexists(d) and not os.path.isdir(d):
        raise NotADirectoryError(errno.ENOTDIR, "it is not a directory", d)
    os.makedirs(d, exist_ok=True)
    if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not readable and writable by this process", d)


class _CheckpointOrder:
    """A LogManager's checkpoint writes, in the order their snapshots were taken: one at a
    time (they share the files' `.tmp`), and a snapshot older than one already written is
    skipped (a periodic write still running in the executor when shutdown writes the
    final checkpoints must not put older offsets back)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken = 0  # snapshots numbered on the loop
        self.written = 0  # the newest written


@dataclass(frozen=True, slots=True)
class CheckpointSnapshot:
    """Per log dir: (dir, recovery points, log start offsets, high watermarks), each a
    {(topic, partition): offset} copied on the loop; `number` orders it in `order`."""

    dirs: tuple[tuple[str, dict[TopicPartition, int], dict[TopicPartition, int],
                      dict[TopicPartition, int]], ...]
    order: _CheckpointOrder
    number: int


class LogManager:
    def __init__(self, log_dirs: list[str], clock: Clock, node_id: int,
                 cluster_id: str | None = None,
                 page_cache: PageCacheWindow = NO_WINDOW) -> None:
        self.log_dirs = [os.path.abspath(d) for d in log_dirs]
        self.clock = clock
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.page_cache = page_cache
        self.logs: dict[TopicPartition, PartitionLog] = {}
        self._dir_of: dict[TopicPartition, str] = {}
        self._retired: list[tuple[float, LogSegment]] = []
        self.had_clean_shutdown = True
        self.recovered_partitions = 0
        self.loaded = False  # shutdown() writes checkpoints only for logs it loaded
        self._locks: list[int] = []
        self.background: set[asyncio.Task] = set()  # file jobs running off the loop
        self._checkpoint_order = _CheckpointOrder()
        # KIP-112: dirs an append failed in (ENOSPC, EIO), offline until the broker restarts
        self.offline_dirs: set[str] = set()
        # called (on the loop) once every log dir is offline: the broker stops
        self.on_all_dirs_offline: Callable[[], None] | None = None
        # called (on the loop) with a dir that went offline while others are left, and the
        # partitions it held: the broker stops following them and tells the controller
        self.on_dir_offline: Callable[[str, list[TopicPartition]], None] | None = None

    def prepare_dirs(self) -> str:
        """Create and lock every log dir (when `lock_dirs` has not yet), and check or write
        its meta.properties.

        Returns the cluster id. Raises LogDirError when another process holds a dir's
        `.lock` or a dir belongs to another node or cluster; nothing is changed then.
        """
        self.lock_dirs()
        for d in self.log_dirs:
            self._check_meta_properties(d, write=False)
        for d in self.log_dirs:
            self._check_meta_properties(d, write=True)
        assert self.cluster_id is not None
        return self.cluster_id

    def lock_dirs(self) -> None:
        """Create every log dir and take its `.lock` (a no-op when held): the first thing a
        broker does to them, so a second broker on the same dirs stops before it opens or
        writes anything there (the local metadata store lives in the first one). Raises
        LogDirError, holding no lock then."""
        self.check_dirs()
        if self._locks:
            return
        for d in self.log_dirs:
            try:
                fd = os.open(os.path.join(d, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self.release_locks()
                raise LogDirError(f"Failed to create or validate data directory {d}: "
                                  f"{e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self.release_locks()
                raise LogDirError(
                    f"Failed to acquire lock on file .lock in {d}. A strom or Kafka broker "
                    f"in another process is using this directory.") from None
            self._locks.append(fd)

    def check_dirs(self) -> None:
        """Create every log dir that does not exist yet; LogDirError naming the first one
        that is not a directory this process may read and write (Kafka would start with
        it offline; strom refuses to start)."""
        for d in self.log_dirs:
            try:
                _check_dir(d)
            except OSError as e:
                raise LogDirError(f"Failed to create or validate data directory {d}: "
                                  f"{e.strerror or e}") from None

    def release_locks(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()

    # --- start-up ---------------------------------------------------------------------
    def startup(self, config_for: Callable[[str], TopicConfig],
                topic_id_for: Callable[[str], uuid.UUID | None]) -> None:
        """Open every partition log in the (prepared) log dirs, recovering after a crash."""
        if not self._locks:
            self.prepare_dirs()
        for d in self.log_dirs:
            clean = os.path.exists(os.path.join(d, files.CLEAN_SHUTDOWN_FILE))
            self.had_clean_shutdown &= clean
            recovery = checkpoint.read_offsets(os.path.join(d, files.RECOVERY_POINT_CHECKPOINT))
            starts = checkpoint.read_offsets(os.path.join(d, files.LOG_START_OFFSET_CHECKPOINT))
            hws = checkpoint.read_offsets(os.path.join(d, files.REPLICATION_OFFSET_CHECKPOINT))
            partition_dirs = []
            for name in sorted(os.listdir(d)):
                path = os.path.join(d, name)
                if not os.path.isdir(path):
                    continue
                if name.endswith(files.DELETE_DIR_SUFFIX):
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                tp = files.parse_partition_dir(name)
                if tp is not None:
                    partition_dirs.append((name, path, tp))
            # a count and a percentage per partition after a crash, as Kafka logs its
            # progress, so an operator sees a long recovery advance
            for loaded, (name, path, tp) in enumerate(partition_dirs, 1):
                if tp in self._dir_of:
                    raise LogDirError(
                        f"Duplicate log directories for {name} are found in both {path} and "
                        f"{os.path.join(self._dir_of[tp], name)}: delete the one that is "
                        f"out of date")
                topic_id = topic_id_for(tp[0])
                stored = checkpoint.read_partition_metadata(
                    os.path.join(path, files.PARTITION_METADATA))
                if topic_id is None or (stored is not None and stored != topic_id):
                    log.warning("Removing %s: its topic no longer exists", path)
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                needs_recovery = not clean and recovery.get(tp, 0) >= 0
                started = time.monotonic()
                plog = PartitionLog.open(
                    path, tp[0], tp[1], config_for(tp[0]), self.clock, topic_id,
                    recovery_point=recovery.get(tp, 0), log_start_offset=starts.get(tp, 0),
                    high_watermark=hws.get(tp, 0), needs_recovery=needs_recovery,
                    page_cache=self.page_cache)
                if needs_recovery:
                    self.recovered_partitions += 1
                    log.info("Recovered %s in %.1f ms (log end offset %d); %d/%d logs "
                             "(%d%%) loaded in %s", name, (time.monotonic() - started) * 1000,
                             plog.log_end_offset, loaded, len(partition_dirs),
                             100 * loaded // len(partition_dirs), d)
                self._add(tp, plog, d)
            try:
                os.unlink(os.path.join(d, files.CLEAN_SHUTDOWN_FILE))
            except FileNotFoundError:
                pass
        self.loaded = True
        if self.had_clean_shutdown or not self.recovered_partitions:
            log.info("Loaded %d partition logs; recovery not needed", len(self.logs))
        else:
            log.info("Loaded %d partition logs after an unclean shutdown; recovered %d",
                     len(self.logs), self.recovered_partitions)

    def _check_meta_properties(self, d: str, write: bool) -> None:
        path = os.path.join(d, files.META_PROPERTIES)
        props = checkpoint.read_properties_file(path)
        if props:
            stored_node = props.get("node.id", props.get("broker.id"))
            if stored_node is not None and int(stored_node) != self.node_id:
                raise LogDirError(f"{path} belongs to node {stored_node}, not {self.node_id}")
            stored_cluster = props.get("cluster.id")
            if self.cluster_id is None:
                self.cluster_id = stored_cluster
            elif stored_cluster and stored_cluster != self.cluster_id:
                raise LogDirError(f"{path} belongs to cluster {stored_cluster}, not "
                                  f"{self.cluster_id}")
            return
        if not write:
            return
        if self.cluster_id is None:
            self.cluster_id = checkpoint.topic_id_to_str(uuid.uuid4())
        checkpoint.write_properties_file(path, {
            "cluster.id": self.cluster_id,
            "directory.id": checkpoint.topic_id_to_str(uuid.uuid4()),
            "node.id": str(self.node_id),
            "version": "1",
        })

    # --- partitions -------------------------------------------------------------------
    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: TopicConfig,
                      topic_id: uuid.UUID | None) -> PartitionLog:
        tp = (topic, partition)
        plog = self.logs.get(tp)
        if plog is None:
            # as Kafka's LogManager.nextLogDirs: the dir with the fewest partitions, ties
            # going to the first in log.dirs
            online = [x for x in self.log_dirs if x not in self.offline_dirs]
            if not online:
                raise KafkaStorageError(f"Every log dir is offline: {self.log_dirs}")
            counts = {x: 0 for x in online}
            for x in self._dir_of.values():
                if x in counts:
                    counts[x] += 1
            d = min(online, key=counts.__getitem__)
            path = os.path.join(d, files.partition_dir_name(topic, partition))
            plog = PartitionLog.open(path, topic, partition, config, self.clock, topic_id,
                                     page_cache=self.page_cache)
            self._add(tp, plog, d)
        return plog

    def _add(self, tp: TopicPartition, plog: PartitionLog, d: str) -> None:
        self.logs[tp] = plog
        self._dir_of[tp] = d
        plog.on_dir_failure = lambda e, d=d: self.mark_dir_offline(d, e)

    def mark_dir_offline(self, d: str, error: OSError) -> None:
        """A write in `d` failed: as Kafka's LogDirFailureChannel (KIP-112), the whole dir
        goes offline until the broker restarts. Its partitions answer KAFKA_STORAGE_ERROR
        (their data stays as it was on disk: no checkpoint or clean-shutdown marker is
        written there again, so the next start recovers it); new partitions go to the
        other dirs; `on_dir_offline` has the controller move their leaderships (Kafka's
        ReplicaManager.handleLogDirFailure); once no dir is left, `on_all_dirs_offline`
        stops the broker (Kafka halts it), so its leaderships move to other replicas."""
        if d in self.offline_dirs:
            return
        self.offline_dirs.add(d)
        held = [tp for tp, x in self._dir_of.items() if x == d]
        for tp in held:
            self.logs[tp].offline = True
        log.error("Log directory %s is offline: %s; its %d partitions answer "
                  "KAFKA_STORAGE_ERROR until the broker restarts", d, error, len(held))
        if self.offline_dirs >= set(self.log_dirs):
            log.critical("Shutting down the broker: all log dirs in %s have failed",
                         self.log_dirs)
            if self.on_all_dirs_offline is not None:
                self.on_all_dirs_offline()
        elif self.on_dir_offline is not None:
            self.on_dir_offline(d, held)

    def delete(self, topic: str, partition: int) -> None:
        """Delete a partition's log: its directory is renamed on the loop and removed
        off it."""
        plog = self.logs.pop((topic, partition), None)
        self._dir_of.pop((topic, partition), None)
        if plog is not None:
            doomed = plog.delete()
            off_loop(shutil.rmtree, doomed, name=f"delete-{topic}-{partition}",
                     tracked=self.background)

    def dir_of(self, topic: str, partition: int) -> str | None:
        return self._dir_of.get((topic, partition))

    # --- periodic work ----------------------------------------------------------------
    def logs_needing_flush(self) -> list[PartitionLog]:
        return [p for p in self.logs.values() if p.needs_flush()]

    def run_retention(self) -> int:
        """Delete segments past retention (see PartitionLog.delete_segments_for_retention)
        and remove retired segments whose delay has passed. The delay is each partition's
        `file.delete.delay.ms`, whose default is the broker's `log.segment.delete.delay.ms`
        (TopicConfig resolves it, and follows a dynamic change of it), as in Kafka."""
        deleted = 0
        now = self.clock.monotonic()
        for plog in list(self.logs.values()):
            deleted += plog.delete_segments_for_retention()
            for seg in plog.take_retired():
                self._retired.append((now + plog.config.get("file.delete.delay.ms") / 1000,
                                      seg))
        self.delete_retired(force=False)
        return deleted

    def delete_retired(self, force: bool) -> None:
        """Remove the retired segments whose file.delete.delay.ms has passed (all when
        `force`, at shutdown): their files are closed here and unlinked off the loop
        (at once when `force`)."""
        now = self.clock.monotonic()
        keep = []
        doomed: list[str] = []
        for due, seg in self._retired:
            if force or due <= now:
                doomed += seg.close_for_deletion()
            else:
                keep.append((due, seg))
        self._retired = keep
        if doomed and force:
            unlink_paths(doomed)
        elif doomed:
            off_loop(unlink_paths, doomed, name="delete-retired-segments",
                     tracked=self.background)

    def checkpoint_snapshot(self) -> CheckpointSnapshot:
        """On the loop: the offsets the checkpoint files will hold, copied out of the
        logs (which only the loop may read), for `write_checkpoint_snapshot`."""
        dirs: dict[str, tuple[dict, dict, dict]] = {
            d: ({}, {}, {}) for d in self.log_dirs if d not in self.offline_dirs}
        for tp, plog in self.logs.items():
            if self._dir_of[tp] in self.offline_dirs:
                continue
            recovery, starts, hws = dirs[self._dir_of[tp]]
            recovery[tp] = plog.recovery_point
            starts[tp] = plog.log_start_offset
            hws[tp] = plog.high_watermark
        self._checkpoint_order.taken += 1
        return CheckpointSnapshot(tuple((d, *offsets) for d, offsets in dirs.items()),
                                  self._checkpoint_order, self._checkpoint_order.taken)

    @staticmethod
    def write_checkpoint_snapshot(snapshot: CheckpointSnapshot) -> list[tuple[str, OSError]]:
        """Blocking (off the loop): write and fsync the checkpoint files of a snapshot;
        touches no state the loop owns. Skipped if a newer snapshot was written. Returns
        the dirs whose files could not be written (ENOSPC, EIO) with the error: the
        caller takes them offline on the loop (`checkpoint_failed`), as Kafka's
        LogDirFailureChannel; the other dirs' files are written all the same."""
        order = snapshot.order
        failed: list[tuple[str, OSError]] = []
        with order.lock:
            if snapshot.number <= order.written:
                return failed
            for d, recovery, starts, hws in snapshot.dirs:
                try:
                    checkpoint.write_offsets(
                        os.path.join(d, files.RECOVERY_POINT_CHECKPOINT), recovery)
                    checkpoint.write_offsets(
                        os.path.join(d, files.LOG_START_OFFSET_CHECKPOINT), starts)
                    checkpoint.write_offsets(
                        os.path.join(d, files.REPLICATION_OFFSET_CHECKPOINT), hws)
                except OSError as e:
                    failed.append((d, e))
            order.written = snapshot.number
        return failed

    def checkpoint_failed(self, failed: list[tuple[str, OSError]]) -> None:
        """On the loop: the dirs `write_checkpoint_snapshot` could not write go offline."""
        for d, e in failed:
            log.error("Writing the checkpoint files in %s failed: %s", d, e)
            self.mark_dir_offline(d, e)

    def remove_expired_producers(self) -> int:
        """Producer id expiration over every partition; returns how many were forgotten."""
        return sum(plog.remove_expired_producers() for plog in list(self.logs.values()))

    def write_checkpoints(self) -> None:
        """Snapshot and write now, on the caller's thread (shutdown, tests); a dir that
        cannot be written is offline after (so gets no clean-shutdown marker)."""
        self.checkpoint_failed(self.write_checkpoint_snapshot(self.checkpoint_snapshot()))

    # --- shutdown ---------------------------------------------------------------------
    def shutdown(self) -> None:
        """Flush everything to disk, write checkpoints and the clean-shutdown marker."""
        if not self.loaded:
            self.release_locks()
            return
        # a dir that fails now only goes offline here (no marker): nobody is told
        self.on_dir_offline = self.on_all_dirs_offline = None
        for plog in self.logs.values():
            if not plog.offline:
                try:
                    plog.fsync()
                except OSError as e:
                    plog.dir_failed(e)
        self.write_checkpoints()
        for plog in self.logs.values():
            plog.close()
        self.delete_retired(force=True)
        self.page_cache.close()
        for d in self.log_dirs:
            if d not in self.offline_dirs:  # an offline dir is recovered at the next start
                checkpoint.write_atomically(os.path.join(d, files.CLEAN_SHUTDOWN_FILE), "")
        self.loaded = False
        self.release_locks()
        log.info("Log manager shut down cleanly")
