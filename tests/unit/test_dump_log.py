"""strom dump-log: segment, index and time index files written with build_batch."""

from __future__ import annotations

import argparse
import struct

import pytest

from strom.cli import dump_log
from strom.log.records import (
    Compression,
    NewRecord,
    build_batch,
    end_txn_marker,
    read_batch_header,
)

TS = 1_700_000_000_000
BASE = 100
NAME = f"{BASE:020d}"


def run_tool(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    parser = argparse.ArgumentParser(prog="strom dump-log")
    dump_log.add_arguments(parser)
    code = dump_log.run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def index_bytes(entries, zeros: int = 0) -> bytes:
    return b"".join(struct.pack(">ii", rel, pos) for rel, pos in entries) + bytes(8 * zeros)


def time_index_bytes(entries, zeros: int = 0) -> bytes:
    return b"".join(struct.pack(">qi", ts, rel) for ts, rel in entries) + bytes(12 * zeros)


@pytest.fixture
def segment(tmp_path):
    """Two batches at offsets 100-102 and 103-104, with their index and time index."""
    a = build_batch([
        NewRecord(b"hello", key=b"k", timestamp=TS),
        NewRecord(b"world", headers=(("h1", b"x"), ("h2", None)), timestamp=TS + 1),
        NewRecord(None, key=b"gone", timestamp=TS + 2),
    ], base_offset=BASE)
    b = build_batch([
        NewRecord(b"zipped-1", key=b"z", timestamp=TS + 10),
        NewRecord(b"zipped-2", key=b"z", timestamp=TS + 11),
    ], base_offset=BASE + 3, compression=Compression.GZIP, producer_id=42, producer_epoch=1,
        base_sequence=10, partition_leader_epoch=5)
    log = tmp_path / f"{NAME}.log"
    log.write_bytes(a + b)
    (tmp_path / f"{NAME}.index").write_bytes(index_bytes([(2, 0), (4, len(a))], zeros=3))
    (tmp_path / f"{NAME}.timeindex").write_bytes(
        time_index_bytes([(TS + 2, 2), (TS + 11, 4)], zeros=2))
    return tmp_path, a, b


def batch_line(header, position: int, codec: str = "none", valid: str = "true") -> str:
    return (f"baseOffset: {header.base_offset} lastOffset: {header.last_offset} "
            f"count: {header.records_count} baseSequence: {header.base_sequence} "
            f"lastSequence: {header.last_sequence} producerId: {header.producer_id} "
            f"producerEpoch: {header.producer_epoch} "
            f"partitionLeaderEpoch: {header.partition_leader_epoch} "
            f"isTransactional: false isControl: false deleteHorizonMs: OptionalLong.empty "
            f"position: {position} CreateTime: {header.max_timestamp} size: {header.size} "
            f"magic: 2 compresscodec: {codec} crc: {header.crc} isvalid: {valid}")


def test_dump_log_batches(capsys, segment):
    d, a, b = segment
    code, out, err = run_tool(capsys, "--files", str(d / f"{NAME}.log"))
    assert code == 0
    ha, hb = read_batch_header(a), read_batch_header(b)
    assert out == [
        f"Dumping {d / NAME}.log",
        "Log starting offset: 100",
        batch_line(ha, 0),
        batch_line(hb, len(a), codec="gzip"),
    ]
    # spelled out once, to pin the field values independent of the helper
    assert out[3].startswith("baseOffset: 103 lastOffset: 104 count: 2 baseSequence: 10 "
                             "lastSequence: 11 producerId: 42 producerEpoch: 1 "
                             "partitionLeaderEpoch: 5 isTransactional: false")
    assert f"position: {len(a)} CreateTime: {TS + 11} size: {len(b)} magic: 2 " in out[3]
    assert err == []


def test_dump_log_print_data_log(capsys, segment):
    d, a, b = segment
    code, out, _ = run_tool(capsys, "--files", str(d / f"{NAME}.log"), "--print-data-log")
    assert code == 0
    assert out[3:6] == [
        f"| offset: 100 CreateTime: {TS} keySize: 1 valueSize: 5 sequence: -1 headerKeys: [] "
        "key: k payload: hello",
        f"| offset: 101 CreateTime: {TS + 1} keySize: -1 valueSize: 5 sequence: -1 "
        "headerKeys: [h1,h2] payload: world",
        f"| offset: 102 CreateTime: {TS + 2} keySize: 4 valueSize: -1 sequence: -1 "
        "headerKeys: [] key: gone",
    ]
    assert out[7:] == [
        f"| offset: 103 CreateTime: {TS + 10} keySize: 1 valueSize: 8 sequence: 10 "
        "headerKeys: [] key: z payload: zipped-1",
        f"| offset: 104 CreateTime: {TS + 11} keySize: 1 valueSize: 8 sequence: 11 "
        "headerKeys: [] key: z payload: zipped-2",
    ]


def test_deep_iteration_without_data_and_skip_metadata(capsys, segment):
    d, _, _ = segment
    _, out, _ = run_tool(capsys, "--files", str(d / f"{NAME}.log"), "--deep-iteration")
    assert out[3] == (f"| offset: 100 CreateTime: {TS} keySize: 1 valueSize: 5 sequence: -1 "
                      "headerKeys: []")
    _, out, _ = run_tool(capsys, "--files", str(d / f"{NAME}.log"), "--print-data-log",
                         "--skip-record-metadata")
    assert out[3:6] == ["| key: k payload: hello", "| payload: world", "| key: gone"]


def test_torn_tail_is_reported(capsys, segment):
    d, a, b = segment
    log = d / f"{NAME}.log"
    log.write_bytes(a + b + b[:40])
    code, out, err = run_tool(capsys, "--files", str(log), "--deep-iteration")
    assert code == 0
    assert out[-1] == f"Found 40 invalid bytes at the end of {NAME}.log"
    assert len([line for line in out if line.startswith("baseOffset:")]) == 2
    assert "at position" in err[0]


def test_garbage_and_preallocated_zeros_are_reported(capsys, tmp_path):
    a = build_batch([NewRecord(b"v", timestamp=TS)])
    log = tmp_path / f"{0:020d}.log"
    log.write_bytes(a + bytes(1000))
    code, out, err = run_tool(capsys, "--files", str(log))
    assert code == 0
    assert out[-1] == f"Found 1000 invalid bytes at the end of {log.name}"
    log.write_bytes(b"\x07" * 70)
    code, out, _ = run_tool(capsys, "--files", str(log))
    assert code == 0
    assert out == [f"Dumping {log}", "Log starting offset: 0",
                   f"Found 70 invalid bytes at the end of {log.name}"]


def test_bad_crc_prints_isvalid_false(capsys, tmp_path):
    a = bytearray(build_batch([NewRecord(b"hello", key=b"k", timestamp=TS)]))
    a[-2] ^= 0xFF  # inside the value: still parses, CRC no longer matches
    log = tmp_path / f"{0:020d}.log"
    log.write_bytes(bytes(a))
    code, out, _ = run_tool(capsys, "--files", str(log), "--print-data-log")
    assert code == 0
    assert out[2].endswith("isvalid: false")
    assert out[3].startswith("| offset: 0 ")


def test_undecodable_records_do_not_stop_the_dump(capsys, tmp_path):
    good = build_batch([NewRecord(b"v", timestamp=TS)], base_offset=1)
    bad = bytearray(build_batch([NewRecord(b"v", timestamp=TS)]))
    bad[22] = int(Compression.GZIP)  # claims gzip, holds plain records
    log = tmp_path / f"{0:020d}.log"
    log.write_bytes(bytes(bad) + good)
    code, out, _ = run_tool(capsys, "--files", str(log), "--print-data-log")
    assert code == 0
    assert out[3].startswith("| cannot read the records of this batch: ")
    assert out[4].startswith("baseOffset: 1 ")
    assert out[5].startswith("| offset: 1 ")


def test_control_batch_and_non_consecutive_offsets(capsys, tmp_path):
    data = build_batch([NewRecord(b"a", timestamp=TS)], base_offset=0, producer_id=7,
                       producer_epoch=0, base_sequence=0, is_transactional=True)
    data += build_batch([end_txn_marker(True, 3, timestamp=TS)], base_offset=5, producer_id=7,
                        producer_epoch=0, is_transactional=True, is_control=True)
    log = tmp_path / f"{0:020d}.log"
    log.write_bytes(data)
    code, out, err = run_tool(capsys, "--files", str(log), "--print-data-log")
    assert code == 0
    assert "isTransactional: true isControl: false" in out[2]
    assert "isTransactional: true isControl: true" in out[4]
    assert out[5] == (f"| offset: 5 CreateTime: {TS} keySize: 4 valueSize: 6 sequence: -1 "
                      "headerKeys: [] endTxnMarker: COMMIT coordinatorEpoch: 3")
    assert err == [f"Non-consecutive offsets in {log.absolute()}", "  0 is followed by 5"]


def test_dump_index(capsys, segment):
    d, a, _ = segment
    code, out, err = run_tool(capsys, "--files", str(d / f"{NAME}.index"))
    assert code == 0
    assert out == [f"Dumping {d / NAME}.index", "offset: 102 position: 0",
                   f"offset: 104 position: {len(a)}"]
    assert err == []


def test_dump_index_mismatch_goes_to_stderr(capsys, segment):
    d, a, _ = segment
    index = d / f"{NAME}.index"
    index.write_bytes(index_bytes([(1, 0), (4, len(a) + 1)]))
    code, out, err = run_tool(capsys, "--files", str(index), "--verify-index-only")
    assert code == 0
    assert out == [f"Dumping {index}"]
    assert err == [f"Mismatches in :{index.absolute()}",
                   "  Index offset: 101, log offset: 102",
                   f"  Index offset: 104, log offset: -1 (no batch starts at position "
                   f"{len(a) + 1})"]


def test_index_sanity_check(capsys, segment):
    d, a, b = segment
    index = d / f"{NAME}.index"
    code, out, _ = run_tool(capsys, "--files", str(index), "--index-sanity-check")
    assert (code, out) == (0, [f"Dumping {index}", f"{index} passed sanity check."])

    log_size = len(a) + len(b)
    index.write_bytes(index_bytes([(2, 0), (4, len(a)), (3, len(a)), (9, 10_000)]))
    code, out, _ = run_tool(capsys, "--files", str(index), "--index-sanity-check")
    assert code == 0
    assert out == [
        f"Dumping {index}",
        f"{index} failed sanity check:",
        "  Index offset 103 (entry 2) is not larger than the previous offset 104",
        f"  Index position 10000 (entry 3, offset 109) is beyond the end of the log "
        f"({log_size} bytes)",
    ]


def test_empty_index(capsys, tmp_path):
    index = tmp_path / f"{0:020d}.index"
    index.write_bytes(b"")
    code, out, _ = run_tool(capsys, "--files", str(index))
    assert (code, out) == (0, [f"Dumping {index}", f"{index} is empty."])


def test_dump_time_index(capsys, segment):
    d, _, _ = segment
    timeindex = d / f"{NAME}.timeindex"
    code, out, err = run_tool(capsys, "--files", str(timeindex))
    assert code == 0
    assert out == [f"Dumping {timeindex}", f"timestamp: {TS + 2} offset: 102",
                   f"timestamp: {TS + 11} offset: 104"]
    assert err == []
    code, out, _ = run_tool(capsys, "--files", str(timeindex), "--index-sanity-check")
    assert out[1] == f"{timeindex} passed sanity check."


def test_time_index_problems(capsys, segment):
    d, _, _ = segment
    timeindex = d / f"{NAME}.timeindex"
    timeindex.write_bytes(time_index_bytes([(TS + 5, 2), (TS + 4, 4), (TS + 20, 3)]))
    code, out, err = run_tool(capsys, "--files", str(timeindex), "--verify-index-only")
    assert code == 0
    assert out == [f"Dumping {timeindex}"]
    assert err == [
        f"Found timestamp mismatch in :{timeindex.absolute()}",
        f"  Index timestamp: {TS + 5}, log timestamp: {TS + 2}",
        f"  Index timestamp: {TS + 4}, log timestamp: {TS + 11}",
        f"Found out of order timestamp in :{timeindex.absolute()}",
        f"  Index timestamp: {TS + 4}, Previously indexed timestamp: {TS + 5}",
        "The following indexed offsets are not found in the log.",
        "Indexed offset: 103, found log offset: 104",
    ]
    code, out, _ = run_tool(capsys, "--files", str(timeindex), "--index-sanity-check")
    assert out[1:] == [
        f"{timeindex} failed sanity check:",
        f"  Time index timestamp {TS + 4} (entry 1) is not larger than the previous "
        f"timestamp {TS + 5}",
        "  Time index offset 103 (entry 2) is smaller than the previous offset 104",
    ]


def test_txn_index(capsys, tmp_path):
    txn = tmp_path / f"{0:020d}.txnindex"
    txn.write_bytes(struct.pack(">hqqqq", 0, 7, 10, 20, 21) + b"\x00\x01")
    code, out, _ = run_tool(capsys, "--files", str(txn))
    assert code == 0
    assert out == [f"Dumping {txn}",
                   "version: 0 producerId: 7 firstOffset: 10 lastOffset: 20 lastStableOffset: 21",
                   f"Found 2 invalid bytes at the end of {txn.name}"]


def test_several_files_missing_and_unknown(capsys, segment):
    d, _, _ = segment
    files = ",".join([str(d / f"{NAME}.index"), str(d / "missing.log"), str(d / "x.snapshot")])
    code, out, err = run_tool(capsys, "--files", files)
    assert code == 1
    assert out[0] == f"Dumping {d / NAME}.index"
    assert f"Dumping {d / 'missing.log'}" in out
    assert any("cannot read" in line and "missing.log" in line for line in err)
    assert f"Ignoring unknown file {d / 'x.snapshot'}" in err


def test_max_bytes_limits_the_log(capsys, segment):
    d, a, _ = segment
    code, out, _ = run_tool(capsys, "--files", str(d / f"{NAME}.log"),
                            "--max-bytes", str(len(a) + 10))
    assert code == 0
    assert len([line for line in out if line.startswith("baseOffset:")]) == 1
    assert not any(line.startswith("Found") for line in out)


def test_large_segment_shows_progress_on_stderr_only(capsys, segment, monkeypatch):
    """A segment past PROGRESS_MIN_BYTES reports how far the dump is on stderr (plain lines
    off a terminal); stdout is the same dump as without it."""
    tmp_path, a, b = segment
    path = str(tmp_path / f"{NAME}.log")
    _, plain_out, plain_err = run_tool(capsys, "--files", path)
    monkeypatch.setattr(dump_log, "PROGRESS_MIN_BYTES", 1)
    monkeypatch.setattr(dump_log, "PROGRESS_STEP", 1)
    monkeypatch.setattr(dump_log, "PROGRESS_PLAIN_EVERY", 1e-9)
    code, out, err = run_tool(capsys, "--files", path)
    assert code == 0 and out == plain_out and plain_err == []
    total = len(a) + len(b)
    assert err == [f"Dumping {NAME}.log: {len(a)}/{total} bytes ({100 * len(a) // total}%)",
                   f"Dumping {NAME}.log: {total}/{total} bytes (100%)"]
