"""File names of Kafka's on-disk layout, in one place.

    <log.dir>/meta.properties
    <log.dir>/recovery-point-offset-checkpoint
    <log.dir>/replication-offset-checkpoint
    <log.dir>/log-start-offset-checkpoint
    <log.dir>/.kafka_cleanshutdown            present only after a clean shutdown
    <log.dir>/<topic>-<partition>/
        00000000000000000000.log              record batches
        00000000000000000000.index            offset index (8-byte entries)
        00000000000000000000.timeindex        time index (12-byte entries)
        00000000000000000000.txnindex         aborted transactions
        leader-epoch-checkpoint
        partition.metadata
"""

from __future__ import annotations

import os

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
SNAPSHOT_SUFFIX = ".snapshot"
DELETED_SUFFIX = ".deleted"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETE_DIR_SUFFIX = "-delete"

META_PROPERTIES = "meta.properties"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
PARTITION_METADATA = "partition.metadata"


def filename_prefix(offset: int) -> str:
    """The 20-digit, zero-padded base offset that names a segment's files."""
    return f"{offset:020d}"


def segment_path(dir_: str, base_offset: int, suffix: str) -> str:
    return os.path.join(dir_, filename_prefix(base_offset) + suffix)


def offset_from_filename(name: str) -> int:
    return int(os.path.basename(name).split(".", 1)[0])


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    """'my-topic-3' -> ('my-topic', 3); None for anything else."""
    topic, sep, index = name.rpartition("-")
    if not sep or not topic or not index.isdigit():
        return None
    return topic, int(index)


def fsync_dir(path: str) -> None:
    """Force a directory's entries (files created, renamed or removed in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
