"""Compaction of a topic written in transactions, on a real broker: a confluent-kafka
transactional producer commits and aborts transactions with overlapping keys on a compacted
topic; the broker's cleaner removes every aborted record from the segment files (checked
with `strom dump-log`), read_committed and read_uncommitted consumers both see exactly the
latest committed values, and in later rounds the ABORT markers get a delete horizon and are
removed after `delete.retention.ms`, while the COMMIT markers of transactions with data left
stay."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from strom.testing.kafka import create_topic
from strom.testing.txn_clients import read_to_end

pytestmark = pytest.mark.timeout(120)

DELETE_RETENTION_MS = 3000
PAD = b"p" * 700  # with segment.bytes 1024: a padding batch fills a segment


@pytest.fixture(scope="module")
def broker_overrides() -> dict:
    return {"log.cleaner.backoff.ms": 100, "transaction.state.log.num.partitions": 1,
            "offsets.topic.num.partitions": 1}


def dump(part_dir: str) -> list[str] | None:
    """`strom dump-log --print-data-log` of the partition's closed and active segments, as
    lines; None while a swap is under way."""
    names = sorted(glob.glob(os.path.join(part_dir, "*.log")))
    if not names or glob.glob(os.path.join(part_dir, "*.cleaned")) or \
            glob.glob(os.path.join(part_dir, "*.swap")):
        return None
    out = subprocess.run([sys.executable, "-m", "strom", "dump-log", "--print-data-log",
                          "--files", ",".join(names)], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:  # a segment replaced between the listing and the read
        return None
    return out.stdout.splitlines()


def markers(lines: list[str]) -> list[tuple[str, bool]]:
    """(type, has a delete horizon) of each marker record."""
    out = []
    horizon = False
    for line in lines:
        if line.startswith("baseOffset:"):
            horizon = "deleteHorizonMs: OptionalLong[" in line
        m = re.search(r"endTxnMarker: (\w+)", line)
        if m:
            out.append((m.group(1), horizon))
    return out


def latest(values: list[bytes]) -> dict[bytes, bytes]:
    out = {}
    for v in values:
        key, _, value = v.partition(b"=")
        if key != b"pad":
            out[key] = value
    return out


def test_aborted_records_and_then_markers_leave_a_compacted_topic(module_broker,
                                                                  topic_name):
    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, config={
        "cleanup.policy": "compact", "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS)})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic_name,
                         "linger.ms": 5})
    producer.init_transactions(30)
    plain = Producer({"bootstrap.servers": bootstrap})

    def pad(n: int = 2) -> None:
        for _ in range(n):  # one batch each: every one rolls the segment before it
            plain.produce(topic_name, b"pad=" + PAD, b"pad")
            assert plain.flush(15) == 0

    transactions = [
        (True, {b"k0": b"c1", b"k1": b"c1", b"k2": b"c1"}),
        (False, {b"k0": b"aborted", b"k3": b"aborted"}),
        (True, {b"k1": b"c3"}),
        (False, {b"k2": b"aborted", b"k4": b"aborted"}),
        (True, {b"k0": b"c5"}),
    ]
    for commit, records in transactions:
        producer.begin_transaction()
        for key, value in records.items():
            producer.produce(topic_name, key + b"=" + value, key)
        assert producer.flush(15) == 0
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
        pad(1)
    pad()  # the last marker in a closed segment
    expected = {b"k0": b"c5", b"k1": b"c3", b"k2": b"c1"}
    part_dir = os.path.join(str(module_broker.log_dir), f"{topic_name}-0")

    def wait_for(condition, what: str) -> list[str]:
        deadline = time.monotonic() + 60
        while True:
            lines = dump(part_dir)
            if lines is not None and condition(lines):
                return lines
            assert time.monotonic() < deadline, (what, lines,
                                                 module_broker.log_text()[-3000:])
            pad(1)  # new dirty bytes: another round
            time.sleep(0.3)

    # round 1: no aborted record is left in the segment files
    def payloads(ls: list[str]) -> list[str]:
        return [x.split("payload: ", 1)[1] for x in ls if "payload: " in x]

    wait_for(lambda ls: not [p for p in payloads(ls) if p.endswith("=aborted") or
                             p == "k0=c1"], "aborted records")
    for committed in (True, False):
        values = read_to_end(bootstrap, topic_name, 1, committed, timeout=30)
        assert latest(values) == expected, (committed, values)
        assert not [v for v in values if b"aborted" in v]
        non_pad = [v for v in values if not v.startswith(b"pad=")]
        assert sorted(non_pad) == sorted(k + b"=" + v for k, v in expected.items())

    # later rounds: the ABORT markers get a delete horizon, then go; the COMMIT markers of
    # the three transactions whose records are left stay
    seen_horizon = False

    def aborts_gone(ls: list[str]) -> bool:
        nonlocal seen_horizon
        found = markers(ls)
        seen_horizon |= any(kind == "ABORT" and horizon for kind, horizon in found)
        return not [kind for kind, _ in found if kind == "ABORT"]

    lines = wait_for(aborts_gone, "ABORT markers removed")
    assert seen_horizon  # they went through their delete.retention.ms first
    assert [kind for kind, _ in markers(lines)] == ["COMMIT"] * 3
    # no aborted transaction is left in any .txnindex
    for path in glob.glob(os.path.join(part_dir, "*.txnindex")):
        assert os.path.getsize(path) == 0, path
    for committed in (True, False):
        assert latest(read_to_end(bootstrap, topic_name, 1, committed, timeout=30)) \
            == expected
