"""strom.coordinator.transaction_log: Kafka's TransactionLogKey/Value formats, pinned with
golden bytes (v0 written and read; v1, flexible, written for Transactions V2 and read)."""

from __future__ import annotations

import dataclasses

import pytest

from strom.coordinator import transaction_log as txlog

VALUE = txlog.TxnLogValue(1000, 2, 60000, 1, (("t", 0), ("t", 1)), 5, 4)
VALUE_V0 = bytes.fromhex(
    "0000" "00000000000003e8" "0002" "0000ea60" "01"
    "00000001" "000174" "00000002" "00000000" "00000001"
    "0000000000000005" "0000000000000004")
VALUE_V1 = bytes.fromhex(
    "0001" "00000000000003e8" "0002" "0000ea60" "01"
    "02" "0274" "03" "00000000" "00000001" "00"
    "0000000000000005" "0000000000000004"
    "01" "02" "02" "0002")  # tagged field 2: client transaction version 2


def test_key_golden_bytes():
    assert txlog.txn_key("tx") == bytes.fromhex("0000" "0002" "7478")
    assert txlog.read_key(bytes.fromhex("000000027478")) == "tx"


def test_value_v0_golden_bytes_and_round_trip():
    assert txlog.txn_value(VALUE) == VALUE_V0
    assert txlog.read_value(VALUE_V0) == VALUE


def test_value_v1_golden_bytes_and_round_trip():
    v2 = dataclasses.replace(VALUE, txn_version=2)
    assert txlog.read_value(VALUE_V1) == v2
    assert txlog.txn_value(v2) == VALUE_V1


def test_empty_partitions_and_bad_input():
    empty = txlog.TxnLogValue(7, 0, 1000, 0, (), 1, -1)
    assert txlog.read_value(txlog.txn_value(empty)) == empty
    for bad in (b"", b"\x00\x09", VALUE_V0[:20], VALUE_V1[:30]):
        with pytest.raises(txlog.FormatError):
            txlog.read_value(bad)
    with pytest.raises(txlog.FormatError):
        txlog.read_key(b"\x00\x01\x00\x01a")


def test_value_v1_written_for_transactions_v2_round_trips():
    v2 = txlog.TxnLogValue(1000, 7, 60000, 2, (("t", 0), ("u", 3)), 5, 4,
                           previous_producer_id=999, next_producer_id=1001, txn_version=2)
    data = txlog.txn_value(v2)
    assert data[:2] == b"\x00\x01"  # version 1, flexible
    assert txlog.read_value(data) == v2
    plain = txlog.TxnLogValue(1000, 7, 60000, 4, (), 5, 4, txn_version=2)
    assert txlog.read_value(txlog.txn_value(plain)) == plain
