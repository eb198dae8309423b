"""Raw-protocol transactions for tests that need no transaction coordinator.

A `RawTxnProducer` gets a producer id from InitProducerId (the idempotent kind: no
transactional id reaches a coordinator), writes transactional batches with Produce (the
transactional id rides in the request, as a real client's does) and ends its transactions
with WriteTxnMarkers, as a coordinator would: the partition side of transactions
(producer state, LSO, `.txnindex`, read_committed Fetch) tested on its own. The broker must
run with `transaction.partition.verification.enable=false`: its transaction coordinator
knows nothing of these transactions and would refuse their batches. Built on
`strom.testing.wire` (struct-encoded, sharing no code with the broker).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from strom.protocol.varint import uvarint
from strom.testing.wire import (
    KafkaSocket,
    Reader,
    Record,
    compact_string,
    encode_record_batch,
    i16,
    i32,
    i64,
    init_producer_id_v1,
    parse_init_producer_id_v1,
    parse_produce,
    produce,
    request,
)

__all__ = ["RawTxnProducer", "write_txn_markers", "parse_write_txn_markers"]

API_WRITE_TXN_MARKERS = 27
_cid = itertools.count(50_000)


def write_txn_markers(producer_id: int, producer_epoch: int, commit: bool,
                      partitions: dict[str, list[int]], *, coordinator_epoch: int = 0,
                      correlation_id: int = 1, version: int = 1) -> bytes:
    """WriteTxnMarkers v1/v2 (flexible) with one marker for `partitions` (topic -> ids)."""
    body = uvarint(2)  # one marker
    body += i64(producer_id) + i16(producer_epoch) + (b"\x01" if commit else b"\x00")
    body += uvarint(len(partitions) + 1)
    for topic, ids in partitions.items():
        body += compact_string(topic) + uvarint(len(ids) + 1)
        body += b"".join(i32(i) for i in ids) + uvarint(0)
    body += i32(coordinator_epoch) + uvarint(0)  # marker's tagged fields
    body += uvarint(0)
    return request(API_WRITE_TXN_MARKERS, version, correlation_id, body, header_version=2)


def _uvarint(r: Reader) -> int:
    shift = value = 0
    while True:
        b = r.i8() & 0xFF
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7


def parse_write_txn_markers(payload: bytes) -> tuple[int, dict[tuple[str, int], int]]:
    """(correlation_id, {(topic, partition): error_code}) of a v1/v2 response."""
    r = Reader(payload)
    cid = r.i32()
    _uvarint(r)  # response header v1 tagged fields (none)
    out: dict[tuple[str, int], int] = {}
    for _ in range(_uvarint(r) - 1):
        r.i64()  # producer id
        for _ in range(_uvarint(r) - 1):
            n = _uvarint(r) - 1
            topic = bytes(r.data[r.pos:r.pos + n]).decode()
            r.pos += n
            for _ in range(_uvarint(r) - 1):
                index, code = r.i32(), r.i16()
                _uvarint(r)
                out[(topic, index)] = code
            _uvarint(r)
        _uvarint(r)
    return cid, out


@dataclass
class RawTxnProducer:
    """One producer id on one broker connection; `send` writes a transactional batch with
    the next sequence of that partition, `commit`/`abort` write the markers."""

    port: int
    transactional_id: str = "raw-txn"

    def __post_init__(self) -> None:
        self.sock = KafkaSocket("127.0.0.1", self.port)
        cid = next(_cid)
        got, err, self.producer_id, self.epoch = parse_init_producer_id_v1(
            self.sock.roundtrip(init_producer_id_v1(cid)))
        if (got, err) != (cid, 0):
            raise AssertionError(f"InitProducerId failed: {err}")
        self.sequences: dict[tuple[str, int], int] = {}
        self.partitions: dict[str, set[int]] = {}

    def send(self, topic: str, partition: int, values: list[bytes], *,
             transactional: bool = True, epoch: int | None = None,
             producer_id: int | None = None, key: bytes | None = b"k"):
        """Produce one batch (acks=-1, v8); returns the partition's ProducePartitionResult."""
        seq = self.sequences.get((topic, partition), 0)
        batch = encode_record_batch(
            [Record(v, key) for v in values],
            producer_id=self.producer_id if producer_id is None else producer_id,
            producer_epoch=self.epoch if epoch is None else epoch, base_sequence=seq,
            transactional=transactional)
        cid = next(_cid)
        got, [res] = parse_produce(self.sock.roundtrip(produce(
            topic, partition, batch, version=8, acks=-1, correlation_id=cid,
            transactional_id=self.transactional_id if transactional else None)), 8)
        assert got == cid
        if res.error_code == 0:
            self.sequences[(topic, partition)] = seq + len(values)
            if transactional:
                self.partitions.setdefault(topic, set()).add(partition)
        return res

    def end(self, commit: bool, *, coordinator_epoch: int = 0, epoch: int | None = None,
            partitions: dict[str, list[int]] | None = None) -> dict[tuple[str, int], int]:
        """Write COMMIT/ABORT markers to the partitions written since the last successful
        end (or to `partitions`); returns the error code per partition."""
        targets = partitions if partitions is not None else {
            t: sorted(ps) for t, ps in self.partitions.items()}
        cid = next(_cid)
        got, codes = parse_write_txn_markers(self.sock.roundtrip(write_txn_markers(
            self.producer_id, self.epoch if epoch is None else epoch, commit, targets,
            coordinator_epoch=coordinator_epoch, correlation_id=cid)))
        assert got == cid
        if partitions is None and not any(codes.values()):
            self.partitions = {}
        return codes

    def commit(self, **kw) -> dict[tuple[str, int], int]:
        return self.end(True, **kw)

    def abort(self, **kw) -> dict[tuple[str, int], int]:
        return self.end(False, **kw)

    def close(self) -> None:
        self.sock.close()
