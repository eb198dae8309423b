"""The aborted-transaction index of one segment (`<base offset>.txnindex`, Kafka's format).

One entry per transaction aborted by an ABORT marker in this segment, 34 bytes, big-endian,
appended in marker order and never rewritten (except by truncation):

    version             int16   0
    producer id         int64
    first offset        int64   first offset of the transaction (its first data batch)
    last offset         int64   offset of the ABORT marker
    last stable offset  int64   the partition's LSO once this transaction was complete

A read_committed Fetch lists the entries that overlap the fetched range (`collect`), so the
client drops the aborted transactions' records; the last stable offset lets the search stop
at the first segment whose entries all lie beyond the range (as Kafka's
`collectAbortedTransactions`). The entries are held in memory (they are few: one per aborted
transaction) and each is appended to the file as it is written; the file is opened only to
append, so renames (deletion, the cleaner's swap) never meet an open descriptor. Owned by the
partition's owner (the event loop).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

ENTRY = struct.Struct(">hqqqq")
ENTRY_VERSION = 0


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        return ENTRY.pack(ENTRY_VERSION, self.producer_id, self.first_offset,
                          self.last_offset, self.last_stable_offset)


def decode_entries(data: bytes) -> list[AbortedTxn]:
    """The entries of a `.txnindex` file's bytes; a partial last entry (a crash in the
    middle of an append) is ignored. ValueError on an unknown entry version."""
    out = []
    for pos in range(0, len(data) - ENTRY.size + 1, ENTRY.size):
        version, pid, first, last, lso = ENTRY.unpack_from(data, pos)
        if version != ENTRY_VERSION:
            raise ValueError(f"unknown .txnindex entry version {version} at position {pos}")
        out.append(AbortedTxn(pid, first, last, lso))
    return out


class TransactionIndex:
    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[AbortedTxn] = []
        try:
            with open(path, "rb") as f:
                self.entries = decode_entries(f.read())
        except FileNotFoundError:
            pass

    def append(self, entry: AbortedTxn) -> None:
        if self.entries and entry.last_offset < self.entries[-1].last_offset:
            raise ValueError(f"aborted transaction ending at {entry.last_offset} is below the "
                             f"last one in {self.path} ({self.entries[-1].last_offset})")
        self.entries.append(entry)
        with open(self.path, "ab") as f:
            f.write(entry.encode())

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or after `offset` (log truncation, recovery)."""
        kept = [e for e in self.entries if e.last_offset < offset]
        if len(kept) == len(self.entries):
            return
        self.entries = kept
        self.rewrite()

    def rewrite(self) -> None:
        """Write the file anew from the entries (or remove it when there are none)."""
        if not self.entries:
            if os.path.exists(self.path):
                os.unlink(self.path)
            return
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(e.encode() for e in self.entries))
        os.replace(tmp, self.path)

    def collect(self, start: int, end: int) -> tuple[list[AbortedTxn], bool]:
        """The entries overlapping [start, end), and whether the search may stop here (an
        entry's LSO reached `end`: later segments hold only transactions after the range)."""
        found = [e for e in self.entries if e.last_offset >= start and e.first_offset < end]
        complete = any(e.last_stable_offset >= end for e in self.entries)
        return found, complete
