"""Print the contents of segment and index files, like Kafka's kafka-dump-log.sh.

  strom dump-log --files 00000000000000000000.log,00000000000000000000.index
  strom dump-log --files 00000000000000000000.log --print-data-log
  strom dump-log --files 00000000000000000000.index --index-sanity-check
  strom dump-log --files __consumer_offsets-0/00000000000000000000.log --offsets-decoder
  strom dump-log --files __transaction_state-0/00000000000000000000.log --transaction-log-decoder

Reads the files directly (no broker needed); the output follows Kafka's tool line by line.
Findings that compare an index with its log (mismatches, offsets not in the log, out of
order timestamps, non-consecutive offsets) go to stderr at the end, as Kafka prints them.
Exit status: 0 when every file could be read (whatever was found in it), 1 when a file is
missing or unreadable.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import mmap
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from strom.cli import dump_log_decoders as decoders
from strom.cli._common import add_flags

RECORD_INDENT = "|"
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
SNAPSHOT_SUFFIX = ".snapshot"

_INDEX_ENTRY = struct.Struct(">ii")  # relative offset, position
_TIME_INDEX_ENTRY = struct.Struct(">qi")  # timestamp, relative offset
_TXN_INDEX_ENTRY = struct.Struct(">hqqqq")  # version, producerId, first, last, lastStable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", required=True, metavar="FILE1,FILE2,...",
                        help="REQUIRED: comma separated list of .log, .index, .timeindex, "
                             ".txnindex and .snapshot files to dump")
    add_flags(parser, {
        "--print-data-log": "print each record's key and value (implies --deep-iteration)",
        "--deep-iteration": "print every record, not only batch headers",
        "--skip-record-metadata": "with deep iteration, do not print each record's metadata",
        "--index-sanity-check": "only check that index files are sane (increasing offsets, "
                                "positions inside the log), without printing their entries",
        "--verify-index-only": "check index entries against the log without printing them",
    })
    decoders = parser.add_mutually_exclusive_group()
    add_flags(decoders, {
        "--offsets-decoder": "decode records as __consumer_offsets data (offset commits and "
                             "group metadata, as JSON); implies --print-data-log",
        "--transaction-log-decoder": "decode records as __transaction_state data "
                                     "(transaction metadata); implies --print-data-log",
    })
    parser.add_argument("--max-bytes", type=int, default=None, metavar="N",
                        help="read at most N bytes of each .log file")


@dataclass
class _Findings:
    """What Kafka's tool prints to stderr after all files: keyed by absolute path."""

    index_mismatches: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    time_mismatches: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    time_out_of_order: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    time_not_found: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    non_consecutive: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def print(self) -> None:
        err = sys.stderr
        for name, rows in self.index_mismatches.items():
            print(f"Mismatches in :{name}", file=err)
            for index_offset, log_offset, note in rows:
                print(f"  Index offset: {index_offset}, log offset: {log_offset}{note}", file=err)
        for name, rows in self.time_mismatches.items():
            print(f"Found timestamp mismatch in :{name}", file=err)
            for index_ts, log_ts in rows:
                print(f"  Index timestamp: {index_ts}, log timestamp: {log_ts}", file=err)
        for name, rows in self.time_out_of_order.items():
            print(f"Found out of order timestamp in :{name}", file=err)
            for index_ts, prev_ts in rows:
                print(f"  Index timestamp: {index_ts}, Previously indexed timestamp: {prev_ts}",
                      file=err)
        for rows in self.time_not_found.values():
            print("The following indexed offsets are not found in the log.", file=err)
            for index_offset, log_offset in rows:
                print(f"Indexed offset: {index_offset}, found log offset: {log_offset}", file=err)
        for name, rows in self.non_consecutive.items():
            print(f"Non-consecutive offsets in {name}", file=err)
            for first, second in rows:
                print(f"  {first} is followed by {second}", file=err)


def run(args: argparse.Namespace) -> int:
    files = [f.strip() for f in args.files.split(",") if f.strip()]
    if not files:
        print("strom dump-log: --files names no file", file=sys.stderr)
        return 1
    parser = _record_parser(args)
    print_data = args.print_data_log or parser is not decoders.plain
    deep = args.deep_iteration or print_data
    findings = _Findings()
    status = 0
    for name in files:
        path = Path(name)
        print(f"Dumping {name}")
        suffix = path.suffix
        try:
            if suffix == LOG_SUFFIX:
                _dump_log(path, deep, print_data, parser, args.skip_record_metadata,
                          args.max_bytes, findings)
            elif suffix == INDEX_SUFFIX:
                _dump_index(path, args.index_sanity_check, args.verify_index_only, findings)
            elif suffix == TIME_INDEX_SUFFIX:
                _dump_time_index(path, args.index_sanity_check, args.verify_index_only,
                                 findings)
            elif suffix == TXN_INDEX_SUFFIX:
                _dump_txn_index(path)
            elif suffix == SNAPSHOT_SUFFIX:
                _dump_snapshot(path)
            else:
                print(f"Ignoring unknown file {name}", file=sys.stderr)
        except BrokenPipeError:
            raise
        except OSError as exc:
            print(f"strom dump-log: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
    findings.print()
    return status


# --- files --------------------------------------------------------------------------------


def _base_offset(path: Path) -> int | None:
    """The segment's base offset from its 20-digit name, None if the name is not one."""
    stem = path.name.split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def _segment_base(path: Path) -> int:
    base = _base_offset(path)
    if base is None:
        print(f"strom dump-log: cannot read a base offset from the name {path.name}; "
              "assuming 0", file=sys.stderr)
        return 0
    return base


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, memory-mapped (segments can be large); b"" for an empty file."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm


def _lower(flag: bool) -> str:
    return "true" if flag else "false"


# --- .log ---------------------------------------------------------------------------------


def _record_parser(args: argparse.Namespace) -> decoders.Parser:
    if args.offsets_decoder:
        return decoders.offsets_record
    if args.transaction_log_decoder:
        return decoders.transaction_record
    return decoders.plain


def _dump_log(path: Path, deep: bool, print_data: bool, parser: decoders.Parser,
              skip_metadata: bool, max_bytes: int | None, findings: _Findings) -> None:
    from strom.log import records as rec

    base = _base_offset(path)
    if base is not None:
        print(f"Log starting offset: {base}")
    with _mapped(path) as data:
        size = len(data)
        limit = size if max_bytes is None else min(size, max(max_bytes, 0))
        valid_bytes = 0
        last_offset: int | None = None
        gaps: list[tuple[int, int]] = []
        with _progress(path.name, limit) as progress:
            for pos, header in rec.iter_batches(data, 0, limit):
                _print_batch(rec, data, pos, header)
                if deep:
                    last_offset = _print_records(rec, data, pos, header, print_data, parser,
                                                 skip_metadata, last_offset, gaps)
                valid_bytes = pos + header.size
                if valid_bytes - progress.done >= PROGRESS_STEP:
                    progress.advance(valid_bytes - progress.done)
        if gaps:
            findings.non_consecutive.setdefault(str(path.absolute()), []).extend(gaps)
        trailing = limit - valid_bytes
        if trailing > 0 and max_bytes is None:
            print(f"Found {trailing} invalid bytes at the end of {path.name}")
            print(f"  at position {valid_bytes}: {_why_invalid(rec, data, valid_bytes, limit)}",
                  file=sys.stderr)


# A segment this large shows its progress on stderr (a bar on a terminal, else a line every
# 5 s), advanced every PROGRESS_STEP bytes: stdout carries only the dump.
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
PROGRESS_STEP = 1024 * 1024
PROGRESS_PLAIN_EVERY = 5.0


def _progress(name: str, size: int):
    from strom.cli.progress import Progress

    large = size >= PROGRESS_MIN_BYTES
    return Progress(f"Dumping {name}", total=size, unit="bytes", plain_every=PROGRESS_PLAIN_EVERY
                    if large else 0.0, interactive=None if large else False)


def _why_invalid(rec, data, pos: int, limit: int) -> str:
    left = limit - pos
    try:
        header = rec.read_batch_header(data[pos:min(limit, pos + rec.BATCH_HEADER_SIZE)])
    except rec.CorruptRecordError as exc:
        return str(exc)
    return f"a batch of {header.size} bytes starts here but only {left} bytes are left"


def _print_batch(rec, data, pos: int, header) -> None:
    try:
        codec = str(header.compression)
    except rec.CorruptRecordError:
        codec = f"unknown({header.compression_id})"
    horizon = header.delete_horizon_ms
    horizon_text = "OptionalLong.empty" if horizon is None else f"OptionalLong[{horizon}]"
    is_valid = rec.batch_crc(data, pos, header.size) == header.crc
    print(f"baseOffset: {header.base_offset} lastOffset: {header.last_offset} "
          f"count: {header.records_count} baseSequence: {header.base_sequence} "
          f"lastSequence: {header.last_sequence} producerId: {header.producer_id} "
          f"producerEpoch: {header.producer_epoch} "
          f"partitionLeaderEpoch: {header.partition_leader_epoch} "
          f"isTransactional: {_lower(header.is_transactional)} "
          f"isControl: {_lower(header.is_control)} deleteHorizonMs: {horizon_text} "
          f"position: {pos} {header.timestamp_type}: {header.max_timestamp} "
          f"size: {header.size} magic: {header.magic} compresscodec: {codec} "
          f"crc: {header.crc} isvalid: {_lower(is_valid)}")


def _print_records(rec, data, pos: int, header, print_data: bool, parser: decoders.Parser,
                   skip_metadata: bool, last_offset: int | None,
                   gaps: list[tuple[int, int]]) -> int | None:
    try:
        records = rec.decode_records(data, pos, header, verify_crc=False)
    except rec.CorruptRecordError as exc:
        print(f"{RECORD_INDENT} cannot read the records of this batch: {exc}")
        return last_offset
    ts_type = header.timestamp_type
    for record in records:
        if last_offset is not None and record.offset != last_offset + 1:
            gaps.append((last_offset, record.offset))
        last_offset = record.offset
        line = []
        prefix = f"{RECORD_INDENT} "
        if not skip_metadata:
            key_size = -1 if record.key is None else len(record.key)
            value_size = -1 if record.value is None else len(record.value)
            header_keys = ",".join(k for k, _ in record.headers)
            line.append(f"{prefix}offset: {record.offset} {ts_type}: {record.timestamp} "
                        f"keySize: {key_size} valueSize: {value_size} "
                        f"sequence: {header.sequence_of(record.offset)} "
                        f"headerKeys: [{header_keys}]")
            prefix = " "
            if header.is_control:
                line.append(_control_text(rec, record))
        if print_data and not header.is_control:
            key, payload = parser(record.offset, record.key, record.value)
            if key is not None:
                line.append(f"{prefix}key: {key}")
                prefix = " "
            if payload is not None:
                line.append(f"{prefix}payload: {payload}")
        print("".join(line))
    return last_offset


def _control_text(rec, record) -> str:
    try:
        kind, coordinator_epoch = rec.decode_control_record(record)
    except rec.CorruptRecordError as exc:
        return f" controlType: invalid ({exc})"
    if coordinator_epoch is not None:
        return f" endTxnMarker: {kind.name} coordinatorEpoch: {coordinator_epoch}"
    if isinstance(kind, rec.ControlRecordType):
        return f" controlType: {kind.name}({int(kind)})"
    return f" controlType: UNKNOWN({kind})"


def _log_batches(log_path: Path) -> tuple[int, list[tuple[int, int, int]]] | None:
    """(log size, [(position, lastOffset, maxTimestamp)]) of the segment's log, or None."""
    from strom.log import records as rec

    try:
        with _mapped(log_path) as data:
            batches = [(pos, h.last_offset, h.max_timestamp)
                       for pos, h in rec.iter_batches(data)]
            return len(data), batches
    except FileNotFoundError:
        return None


# --- .index -------------------------------------------------------------------------------


def _read_entries(data: bytes, entry: struct.Struct, offset_field: int) -> list[tuple]:
    """Whole entries up to the preallocated zeros: an entry after the first with relative
    offset 0 ends the index (as in Kafka, which preallocates index files)."""
    entries = []
    for i in range(len(data) // entry.size):
        values = entry.unpack_from(data, i * entry.size)
        if i > 0 and values[offset_field] == 0:
            break
        entries.append(values)
    return entries


def _load_index(path: Path, entry: struct.Struct, offset_field: int
                ) -> tuple[int, int, list[tuple]] | None:
    """(file length, segment base offset, entries) of an index file, or None (after saying
    so) when it holds no entry."""
    data = path.read_bytes()
    base = _segment_base(path)
    entries = _read_entries(data, entry, offset_field)
    if not entries:
        print(f"{path} is empty.")
        return None
    return len(data), base, entries


def _dump_index(path: Path, sanity_only: bool, verify_only: bool, findings: _Findings) -> None:
    loaded = _load_index(path, _INDEX_ENTRY, 0)
    if loaded is None:
        return
    length, base, entries = loaded
    log = _log_batches(path.with_suffix(LOG_SUFFIX))
    if sanity_only:
        problems = _index_problems(path, length, base, entries, log)
        _print_sanity(path, problems)
        return
    by_position: dict[int, int] = {}
    if log is None:
        print(f"strom dump-log: {path.with_suffix(LOG_SUFFIX)} not found; index entries are "
              "not checked against the log", file=sys.stderr)
    else:
        by_position = {pos: last for pos, last, _ in log[1]}
    mismatches = []
    for relative, position in entries:
        offset = base + relative
        if log is not None:
            log_offset = by_position.get(position)
            if log_offset is None:
                mismatches.append((offset, -1, f" (no batch starts at position {position})"))
            elif log_offset != offset:
                mismatches.append((offset, log_offset, ""))
        if not verify_only:
            print(f"offset: {offset} position: {position}")
    if mismatches:
        findings.index_mismatches[str(path.absolute())] = mismatches


def _index_problems(path: Path, length: int, base: int, entries: list[tuple[int, int]],
                    log: tuple[int, list] | None) -> list[str]:
    log_size = None if log is None else log[0]
    notes = [] if log is not None else [
        f"Cannot check positions: {path.with_suffix(LOG_SUFFIX).name} not found"]

    def beyond_log(i: int, offset: int, position: int) -> list[str]:
        if position < 0 or (log_size is not None and position >= log_size):
            return [f"Index position {position} (entry {i}, offset {offset}) is beyond the end "
                    f"of the log ({log_size} bytes)"]
        return []

    return _entry_problems("Index", path, length, _INDEX_ENTRY, base, entries,
                           ("offset", "position"), notes, beyond_log)


def _entry_problems(what: str, path: Path, length: int, entry: struct.Struct, base: int,
                    entries: list[tuple[int, int]], columns: tuple[str, str],
                    notes: list[str] | None = None, more=None) -> list[str]:
    """What --index-sanity-check finds in an index file of `what` ("Index", "Time index"):
    a length that is not a whole number of entries, then `notes`, then per entry: an offset
    below the segment's base, a first column (`columns` name the two, "offset" being the
    relative offset) not larger than the previous entry's, a second one smaller than the
    previous entry's, and `more(i, offset, position)` for an offset index."""
    problems = []
    if length % entry.size:
        problems.append(f"{what} file {path.name} is corrupt, found {length} bytes which is "
                        f"not a multiple of {entry.size}")
    problems += notes or []
    first, second = columns
    offset_at = columns.index("offset")
    prev = None
    for i, row in enumerate(entries):
        values = list(row)
        values[offset_at] += base
        offset = values[offset_at]
        if offset < base:
            problems.append(f"{what} offset {offset} (entry {i}) is smaller than the base "
                            f"offset {base}")
        if prev is not None and values[0] <= prev[0]:
            problems.append(f"{what} {first} {values[0]} (entry {i}) is not larger than the "
                            f"previous {first} {prev[0]}")
        if prev is not None and values[1] < prev[1]:
            problems.append(f"{what} {second} {values[1]} (entry {i}) is smaller than the "
                            f"previous {second} {prev[1]}")
        if more is not None:
            problems += more(i, *values)
        prev = values
    return problems


def _print_sanity(path: Path, problems: list[str]) -> None:
    if not problems:
        print(f"{path} passed sanity check.")
        return
    print(f"{path} failed sanity check:")
    for problem in problems:
        print(f"  {problem}")


# --- .timeindex ---------------------------------------------------------------------------


def _dump_time_index(path: Path, sanity_only: bool, verify_only: bool,
                     findings: _Findings) -> None:
    loaded = _load_index(path, _TIME_INDEX_ENTRY, 1)
    if loaded is None:
        return
    length, base, entries = loaded
    if sanity_only:
        _print_sanity(path, _time_index_problems(path, length, base, entries))
        return
    log = _log_batches(path.with_suffix(LOG_SUFFIX))
    if log is None:
        print(f"strom dump-log: {path.with_suffix(LOG_SUFFIX)} not found; time index entries "
              "are not checked against the log", file=sys.stderr)
        last_offsets: list[int] = []
    else:
        last_offsets = [last for _, last, _ in log[1]]
    key = str(path.absolute())
    prev_ts = None
    for timestamp, relative in entries:
        offset = base + relative
        if log is not None:
            i = bisect.bisect_left(last_offsets, offset)
            if i == len(last_offsets):
                findings.time_not_found.setdefault(key, []).append((offset, -1))
            elif last_offsets[i] != offset:
                findings.time_not_found.setdefault(key, []).append((offset, last_offsets[i]))
            else:
                log_ts = log[1][i][2]
                if log_ts != timestamp:
                    findings.time_mismatches.setdefault(key, []).append((timestamp, log_ts))
                if prev_ts is not None and prev_ts >= timestamp:
                    findings.time_out_of_order.setdefault(key, []).append((timestamp, prev_ts))
        if not verify_only:
            print(f"timestamp: {timestamp} offset: {offset}")
        prev_ts = timestamp


def _time_index_problems(path: Path, length: int, base: int,
                         entries: list[tuple[int, int]]) -> list[str]:
    return _entry_problems("Time index", path, length, _TIME_INDEX_ENTRY, base, entries,
                           ("timestamp", "offset"))


# --- .txnindex ----------------------------------------------------------------------------


def _dump_txn_index(path: Path) -> None:
    data = path.read_bytes()
    size = _TXN_INDEX_ENTRY.size
    whole = len(data) - len(data) % size
    for pos in range(0, whole, size):
        version, producer_id, first, last, last_stable = _TXN_INDEX_ENTRY.unpack_from(data, pos)
        if version != 0:
            print(f"Unexpected aborted transaction version {version} at position {pos}; "
                  f"{len(data) - pos} bytes not read")
            return
        print(f"version: {version} producerId: {producer_id} firstOffset: {first} "
              f"lastOffset: {last} lastStableOffset: {last_stable}")
    if whole < len(data):
        print(f"Found {len(data) - whole} invalid bytes at the end of {path.name}")


# --- .snapshot (producer state) -------------------------------------------------------------


def _dump_snapshot(path: Path) -> None:
    """One line per producer, as Kafka's dumpProducerIdSnapshot prints a snapshot file."""
    from strom.log import producer_snapshot

    try:
        entries = producer_snapshot.decode(path.read_bytes())
    except producer_snapshot.CorruptSnapshot as exc:
        print(f"Found invalid snapshot {path.name}: {exc}")
        return
    for e in entries:
        txn = f"OptionalLong[{e.current_txn_first_offset}]" \
            if e.current_txn_first_offset >= 0 else "OptionalLong.empty"
        line = (f"producerId: {e.producer_id} producerEpoch: {e.epoch} "
                f"coordinatorEpoch: {e.coordinator_epoch} currentTxnFirstOffset: {txn} "
                f"lastTimestamp: {e.timestamp} ")
        if e.last_offset >= 0:
            first_seq = e.last_sequence - e.offset_delta if e.last_sequence >= 0 else -1
            line += (f"firstSequence: {first_seq} lastSequence: {e.last_sequence} "
                     f"lastOffset: {e.last_offset} offsetDelta: {e.offset_delta} "
                     f"timestamp: {e.timestamp}")
        print(line.rstrip())
