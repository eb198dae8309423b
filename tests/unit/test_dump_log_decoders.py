"""strom dump-log --offsets-decoder and --transaction-log-decoder: records written with the
coordinators' own codecs, printed in kafka-dump-log's form."""

from __future__ import annotations

import argparse
import struct

import pytest

from strom.cli import dump_log
from strom.coordinator import offsets_format as fmt
from strom.coordinator import transaction_log as txnlog
from strom.coordinator.transaction_metadata import TxnState
from strom.log.records import NewRecord, build_batch

TS = 1_700_000_000_000


def run_tool(capsys, *argv: str) -> list[str]:
    parser = argparse.ArgumentParser(prog="strom dump-log")
    dump_log.add_arguments(parser)
    assert dump_log.run(parser.parse_args(list(argv))) == 0
    return capsys.readouterr().out.splitlines()


def payloads(lines: list[str]) -> list[str]:
    """What each record line prints after its metadata (from ` key: ` on)."""
    return [line[line.index(" key: ") + 1:] if " key: " in line else line
            for line in lines if line.startswith("| ")]


def subscription_v1(topics: list[str], owned: list[tuple[str, list[int]]]) -> bytes:
    out = struct.pack(">hi", 1, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    out += struct.pack(">i", 2) + b"ud" + struct.pack(">i", len(owned))
    for t, parts in owned:
        out += struct.pack(">h", len(t)) + t.encode() + struct.pack(f">i{len(parts)}i",
                                                                   len(parts), *parts)
    return out


def assignment_v0(assigned: list[tuple[str, list[int]]]) -> bytes:
    out = struct.pack(">hi", 0, len(assigned))
    for t, parts in assigned:
        out += struct.pack(">h", len(t)) + t.encode() + struct.pack(f">i{len(parts)}i",
                                                                   len(parts), *parts)
    return out + struct.pack(">i", -1)


def test_offsets_decoder(capsys, tmp_path):
    member = fmt.MemberValue("m-1", None, "client", "/127.0.0.1", 300000, 45000,
                             subscription_v1(["t"], [("t", [0, 1])]),
                             assignment_v0([("t", [0, 1])]))
    other = fmt.MemberValue("x-1", "inst", "c2", "/h", 1, 2, b"\x01\x02", b"")
    offset_v1 = struct.pack(">hq", 1, 7) + struct.pack(">h", 0) + struct.pack(">qq", TS, TS + 9)
    records = [
        NewRecord(fmt.offset_value(fmt.OffsetValue(42, 3, "meta", TS)),
                  key=fmt.offset_key("g", "t", 1), timestamp=TS),
        NewRecord(fmt.group_value(fmt.GroupValue("consumer", 2, "range", "m-1", TS,
                                                 (member,))),
                  key=fmt.group_key("g"), timestamp=TS),
        NewRecord(fmt.group_value(fmt.GroupValue("connect", 1, None, None, TS, (other,))),
                  key=fmt.group_key("c"), timestamp=TS),
        NewRecord(None, key=fmt.offset_key("g", "t", 0), timestamp=TS),
        NewRecord(offset_v1, key=struct.pack(">h", 0) + fmt.offset_key("g", "u", 2)[2:],
                  timestamp=TS),
        NewRecord(b"\0\x09whatever", key=struct.pack(">h", 9) + b"??", timestamp=TS),
        NewRecord(b"x", key=struct.pack(">h", 1) + b"\0", timestamp=TS),
    ]
    (tmp_path / "00000000000000000000.log").write_bytes(build_batch(records, base_offset=0))
    out = run_tool(capsys, "--files", str(tmp_path / "00000000000000000000.log"),
                   "--offsets-decoder")
    assert payloads(out)[:6] == [
        'key: {"type":"1","data":{"group":"g","topic":"t","partition":1}} payload: '
        '{"version":"3","data":{"offset":42,"leaderEpoch":3,"metadata":"meta",'
        f'"commitTimestamp":{TS}}}}}',
        'key: {"type":"2","data":{"group":"g"}} payload: {"version":"3","data":{'
        '"protocolType":"consumer","generation":2,"protocol":"range","leader":"m-1",'
        f'"currentStateTimestamp":{TS},"members":[{{"memberId":"m-1","groupInstanceId":null,'
        '"clientId":"client","clientHost":"/127.0.0.1","rebalanceTimeout":300000,'
        '"sessionTimeout":45000,"subscription":{"topics":["t"],"userData":"dWQ=",'
        '"ownedPartitions":[{"topic":"t","partitions":[0,1]}]},'
        '"assignment":{"assignedPartitions":[{"topic":"t","partitions":[0,1]}],'
        '"userData":null}}]}}',
        'key: {"type":"2","data":{"group":"c"}} payload: {"version":"3","data":{'
        '"protocolType":"connect","generation":1,"protocol":null,"leader":null,'
        f'"currentStateTimestamp":{TS},"members":[{{"memberId":"x-1","groupInstanceId":"inst",'
        '"clientId":"c2","clientHost":"/h","rebalanceTimeout":1,"sessionTimeout":2,'
        '"subscription":"AQI=","assignment":""}]}}',
        'key: {"type":"1","data":{"group":"g","topic":"t","partition":0}} payload: <DELETE>',
        'key: {"type":"0","data":{"group":"g","topic":"u","partition":2}} payload: '
        f'{{"version":"1","data":{{"offset":7,"metadata":"","commitTimestamp":{TS},'
        f'"expireTimestamp":{TS + 9}}}}}',
        "key: Unknown record type 9 at offset 5, skipping.",
    ]
    assert payloads(out)[6].startswith("key: Error at offset 6, skipping. ")


def test_transaction_log_decoder(capsys, tmp_path):
    ongoing = txnlog.TxnLogValue(4000, 2, 60000, TxnState.ONGOING, (("a", 1), ("a", 0),
                                                                   ("b", 3)), TS + 5, TS)
    v2 = txnlog.TxnLogValue(4001, 0, 1000, TxnState.PREPARE_EPOCH_FENCE, (), TS, TS,
                            next_producer_id=4002, txn_version=2)
    records = [
        NewRecord(txnlog.txn_value(ongoing), key=txnlog.txn_key("tx-1"), timestamp=TS),
        NewRecord(txnlog.txn_value(v2), key=txnlog.txn_key("tx-2"), timestamp=TS),
        NewRecord(None, key=txnlog.txn_key("tx-1"), timestamp=TS),
        NewRecord(b"", key=struct.pack(">h", 5), timestamp=TS),
        NewRecord(b"\0\0\1", key=txnlog.txn_key("tx-3"), timestamp=TS),
    ]
    (tmp_path / "00000000000000000000.log").write_bytes(build_batch(records, base_offset=0))
    out = run_tool(capsys, "--files", str(tmp_path / "00000000000000000000.log"),
                   "--transaction-log-decoder", "--skip-record-metadata")
    assert [line.removeprefix("| ") for line in out[3:7]] == [
        "key: transaction_metadata::transactionalId=tx-1 payload: producerId:4000,"
        f"producerEpoch:2,state=Ongoing,partitions=[a-0,a-1,b-3],txnLastUpdateTimestamp="
        f"{TS + 5},txnTimeoutMs=60000",
        "key: transaction_metadata::transactionalId=tx-2 payload: producerId:4001,"
        f"producerEpoch:0,state=PrepareEpochFence,partitions=[],txnLastUpdateTimestamp={TS},"
        "txnTimeoutMs=1000",
        "key: transaction_metadata::transactionalId=tx-1 payload: <DELETE>",
        "key: unknown::version=5",
    ]
    assert out[7].startswith("| key: Error at offset 4, skipping. ") and len(out) == 8


def test_decoders_are_exclusive(capsys, tmp_path):
    parser = argparse.ArgumentParser(prog="strom dump-log")
    dump_log.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--files", "x.log", "--offsets-decoder",
                           "--transaction-log-decoder"])
