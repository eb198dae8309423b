"""Kafka's small text checkpoint files, written atomically (temp file, fsync, rename).

Offset checkpoints (recovery-point-offset-checkpoint, replication-offset-checkpoint,
log-start-offset-checkpoint):
    0                  version
    2                  number of entries
    my-topic 0 1234    topic partition offset
    my-topic 1 99

leader-epoch-checkpoint:
    0                  version
    2                  number of entries
    0 0                leader epoch, start offset
    3 1200

partition.metadata:
    version: 0
    topic_id: <22-character URL-safe base64 topic id>
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import uuid

from strom import properties

log = logging.getLogger(__name__)


def write_atomically(path: str, text: str, fsync: bool = True) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_versioned_lines(path: str) -> list[list[str]] | None:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split() for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    if len(lines) < 2 or lines[0] != ["0"] or not lines[1][0].isdigit():
        raise ValueError(f"{path}: malformed checkpoint header")
    entries = lines[2:]
    if len(entries) != int(lines[1][0]):
        raise ValueError(f"{path}: expected {lines[1][0]} entries, found {len(entries)}")
    return entries


def read_offsets(path: str) -> dict[tuple[str, int], int]:
    """An offset checkpoint as {(topic, partition): offset}; empty if absent or malformed."""
    try:
        entries = _read_versioned_lines(path) or []
        return {(e[0], int(e[1])): int(e[2]) for e in entries}
    except (ValueError, IndexError) as e:
        log.warning("Ignoring malformed checkpoint %s: %s", path, e)
        return {}


def write_offsets(path: str, offsets: dict[tuple[str, int], int]) -> None:
    lines = ["0", str(len(offsets))]
    lines += [f"{t} {p} {o}" for (t, p), o in sorted(offsets.items())]
    write_atomically(path, "\n".join(lines) + "\n")


def read_leader_epochs(path: str) -> list[tuple[int, int]]:
    try:
        entries = _read_versioned_lines(path) or []
        return [(int(e[0]), int(e[1])) for e in entries]
    except (ValueError, IndexError) as e:
        log.warning("Ignoring malformed leader epoch checkpoint %s: %s", path, e)
        return []


def write_leader_epochs(path: str, epochs: list[tuple[int, int]]) -> None:
    lines = ["0", str(len(epochs))] + [f"{e} {o}" for e, o in epochs]
    write_atomically(path, "\n".join(lines) + "\n")


class LeaderEpochFile:
    """The leader-epoch-checkpoint of one partition, written off the loop.

    The loop hands in each new list of entries (`update`, never blocking: a short lock
    guards only the latest snapshot); `write_latest` (blocking: an executor thread, a
    flush, shutdown) writes the newest snapshot not yet on disk, atomically and fsynced.
    Writes are serialized and never go back to an older snapshot; after `close` (topic
    deletion) nothing is written, as Kafka's writeIfDirExists.
    """

    def __init__(self, path: str, written: list[tuple[int, int]] | None = None) -> None:
        self.path = path
        self._state = threading.Lock()  # the snapshot fields below; held only briefly
        self._io = threading.Lock()  # one write at a time
        self._version = 0
        self._entries: tuple[tuple[int, int], ...] = tuple(written or ())
        self._written = 0
        self._closed = False

    def update(self, entries: list[tuple[int, int]]) -> None:
        with self._state:
            self._version += 1
            self._entries = tuple(entries)

    def close(self) -> None:
        with self._state:
            self._closed = True

    def write_latest(self) -> None:
        with self._io:
            with self._state:
                version, entries = self._version, self._entries
                if version <= self._written or self._closed:
                    return
            lines = ["0", str(len(entries))] + [f"{e} {o}" for e, o in entries]
            tmp = self.path + ".tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                with self._state:
                    if self._closed:
                        return
                    os.replace(tmp, self.path)
                    self._written = version
            except FileNotFoundError:
                if os.path.isdir(os.path.dirname(self.path)):
                    raise
                # the partition's directory is gone (deleted meanwhile): nothing to write


def topic_id_to_str(topic_id: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, without padding."""
    return base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")


def topic_id_from_str(text: str) -> uuid.UUID:
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def read_partition_metadata(path: str) -> uuid.UUID | None:
    try:
        with open(path, encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        return topic_id_from_str(fields["topic_id"].strip())
    except FileNotFoundError:
        return None
    except (KeyError, ValueError) as e:
        log.warning("Ignoring malformed %s: %s", path, e)
        return None


def write_partition_metadata(path: str, topic_id: uuid.UUID) -> None:
    write_atomically(path, f"version: 0\ntopic_id: {topic_id_to_str(topic_id)}\n")


def read_properties_file(path: str) -> dict[str, str]:
    """A properties file such as meta.properties (see strom.properties); empty if absent."""
    try:
        return properties.load(path)
    except FileNotFoundError:
        return {}


def write_properties_file(path: str, values: dict[str, str]) -> None:
    write_atomically(path, "#\n" + properties.dumps(values, comment="Written by strom"))
