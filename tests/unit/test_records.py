"""strom.log.records: golden bytes, every codec, corrupt input, round-trip property."""

from __future__ import annotations

import struct

import cramjam
import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.log import records as rec
from strom.log.records import (
    Compression,
    ControlRecordType,
    CorruptRecordError,
    NewRecord,
    Record,
    TimestampType,
    build_batch,
    decode_batch,
    decode_records,
    iter_batches,
    read_batch_header,
)

TS = 1_700_000_000_000  # 0x0000018bcfe56800

# Two records written out by hand from the v2 layout (see the module docstring):
#   offset 0: key b"k", value b"v", no headers, timestamp TS
#   offset 1: null key, empty value, header ("h", None), timestamp TS + 5
GOLDEN_RECORDS = bytes.fromhex(
    "10"  # length 8 (zigzag 16)
    "00"  # attributes
    "00"  # timestampDelta 0
    "00"  # offsetDelta 0
    "02" "6b"  # keyLength 1, b"k"
    "02" "76"  # valueLength 1, b"v"
    "00"  # headers 0
    "12"  # length 9 (zigzag 18)
    "00"  # attributes
    "0a"  # timestampDelta 5 (zigzag 10)
    "02"  # offsetDelta 1
    "01"  # keyLength -1: null key
    "00"  # valueLength 0
    "02"  # headers 1
    "02" "68"  # header key length 1, "h"
    "01"  # header value length -1: null
)
GOLDEN_AFTER_CRC = bytes.fromhex(
    "0000"  # attributes: no compression, CreateTime
    "00000001"  # lastOffsetDelta 1
    "0000018bcfe56800"  # baseTimestamp TS
    "0000018bcfe56805"  # maxTimestamp TS + 5
    "ffffffffffffffff"  # producerId -1
    "ffff"  # producerEpoch -1
    "ffffffff"  # baseSequence -1
    "00000002"  # records count 2
) + GOLDEN_RECORDS
GOLDEN_CRC = 0x13F3C0B7
GOLDEN = bytes.fromhex(
    "0000000000000000"  # baseOffset 0
    "00000044"  # batchLength 68 = 49 + 19 bytes of records
    "00000000"  # partitionLeaderEpoch 0
    "02"  # magic
    "13f3c0b7"  # crc
) + GOLDEN_AFTER_CRC

GOLDEN_RECORDS_LIST = [
    NewRecord(b"v", key=b"k", timestamp=TS),
    NewRecord(b"", key=None, headers=(("h", None),), timestamp=TS + 5),
]


def test_golden_crc_is_crc32c_of_attributes_to_end():
    assert crc32c.crc32c(GOLDEN_AFTER_CRC) == GOLDEN_CRC
    assert rec.batch_crc(GOLDEN) == GOLDEN_CRC


def test_build_batch_matches_golden_bytes():
    assert build_batch(GOLDEN_RECORDS_LIST) == GOLDEN


def test_decode_golden_bytes():
    batch = decode_batch(GOLDEN)
    h = batch.header
    assert (h.base_offset, h.batch_length, h.partition_leader_epoch, h.magic, h.crc) == (
        0, 68, 0, 2, GOLDEN_CRC)
    assert h.size == len(GOLDEN) == 80
    assert h.last_offset == 1
    assert h.records_count == 2
    assert h.compression is Compression.NONE
    assert h.timestamp_type is TimestampType.CREATE_TIME
    assert not h.is_transactional and not h.is_control and h.delete_horizon_ms is None
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence) == (-1, -1, -1, -1)
    assert batch.records == (
        Record(offset=0, timestamp=TS, key=b"k", value=b"v", headers=(), attributes=0),
        Record(offset=1, timestamp=TS + 5, key=None, value=b"", headers=(("h", None),)),
    )


@pytest.mark.parametrize("codec", list(Compression))
def test_round_trip_every_codec(codec):
    records = [
        NewRecord(b"value-%d" % i * (i + 1), key=b"key-%d" % i,
                  headers=(("trace", b"t%d" % i), ("null", None)), timestamp=TS + i)
        for i in range(50)
    ] + [NewRecord(None, key=None, timestamp=TS - 3)]
    data = build_batch(records, base_offset=1000, compression=codec, producer_id=7,
                       producer_epoch=2, base_sequence=40, partition_leader_epoch=3)
    batch = decode_batch(data)
    h = batch.header
    assert h.compression is codec
    assert (h.base_offset, h.last_offset, h.records_count) == (1000, 1050, 51)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence) == (7, 2, 40, 90)
    assert h.partition_leader_epoch == 3
    assert (h.base_timestamp, h.max_timestamp) == (TS, TS + 49)
    assert [r.offset for r in batch.records] == list(range(1000, 1051))
    for r, original in zip(batch.records, records, strict=True):
        assert (r.key, r.value, r.headers, r.timestamp) == (
            original.key, original.value, original.headers, original.timestamp)
    if codec is not Compression.NONE:  # the records area really is compressed
        assert len(data) < len(build_batch(records, base_offset=1000))


def test_snappy_raw_and_xerial_both_decode():
    records = [NewRecord(b"x" * 100_000, key=b"big", timestamp=TS)]
    xerial = build_batch(records, compression=Compression.SNAPPY)
    raw = build_batch(records, compression=Compression.SNAPPY, snappy_xerial=False)
    assert xerial[rec.BATCH_HEADER_SIZE:].startswith(b"\x82SNAPPY\x00")
    assert not raw[rec.BATCH_HEADER_SIZE:].startswith(b"\x82SNAPPY\x00")
    assert decode_batch(xerial).records == decode_batch(raw).records
    assert decode_batch(xerial).records[0].value == b"x" * 100_000


def test_lz4_uses_the_frame_format():
    data = build_batch([NewRecord(b"v", timestamp=TS)], compression=Compression.LZ4)
    assert data[rec.BATCH_HEADER_SIZE:].startswith(b"\x04\x22\x4d\x18")  # LZ4 frame magic


def test_zstd_streaming_frame_without_content_size_decodes():
    # Java's zstd-jni writes frames without a content size; build one by hand.
    body = GOLDEN_RECORDS
    compressor = cramjam.zstd.Compressor()
    compressor.compress(body)
    compressed = bytes(compressor.finish())
    data = _with_records_area(GOLDEN, compressed, attributes=int(Compression.ZSTD))
    assert [r.value for r in decode_batch(data).records] == [b"v", b""]


def test_log_append_time_gives_every_record_the_max_timestamp():
    data = build_batch([NewRecord(b"a", timestamp=TS), NewRecord(b"b", timestamp=TS + 1)],
                       timestamp_type=TimestampType.LOG_APPEND_TIME, max_timestamp=TS + 99)
    batch = decode_batch(data)
    assert batch.header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert [r.timestamp for r in batch.records] == [TS + 99, TS + 99]


def test_records_keep_offsets_with_gaps_and_delete_horizon():
    kept = [Record(offset=10, timestamp=TS, key=b"a", value=b"1"),
            Record(offset=13, timestamp=TS + 3, key=b"b", value=None)]
    data = build_batch(kept, base_offset=10, last_offset_delta=5, delete_horizon_ms=TS + 100,
                       is_transactional=True, producer_id=1, producer_epoch=0)
    batch = decode_batch(data)
    assert batch.header.last_offset == 15
    assert batch.header.delete_horizon_ms == TS + 100
    assert batch.header.is_transactional
    assert batch.records == tuple(kept)


def test_control_batch_end_txn_marker():
    data = build_batch([rec.end_txn_marker(commit=True, coordinator_epoch=5, timestamp=TS)],
                       base_offset=9, is_control=True, is_transactional=True, producer_id=3)
    batch = decode_batch(data)
    assert batch.header.is_control and batch.header.is_transactional
    assert rec.decode_control_record(batch.records[0]) == (ControlRecordType.COMMIT, 5)


def test_empty_batch():
    data = build_batch([], base_offset=5, last_offset_delta=2, producer_id=4)
    batch = decode_batch(data)
    assert batch.records == ()
    assert batch.header.last_offset == 7
    assert len(data) == rec.BATCH_HEADER_SIZE


def test_iter_batches_stops_before_a_torn_tail():
    a = build_batch(GOLDEN_RECORDS_LIST, base_offset=0)
    b = build_batch(GOLDEN_RECORDS_LIST, base_offset=2)
    data = a + b + b[:30]
    assert [(pos, h.base_offset) for pos, h in iter_batches(data)] == [(0, 0), (len(a), 2)]
    assert list(iter_batches(a + b"\x00" * 100)) == [(0, read_batch_header(a))]


def test_decode_from_memoryview_and_position():
    data = b"junk" + GOLDEN
    assert decode_batch(memoryview(data), pos=4).records == decode_batch(GOLDEN).records


# --- corrupt input ------------------------------------------------------------------------


def _with_records_area(batch: bytes, area: bytes, attributes: int | None = None,
                       count: int | None = None) -> bytes:
    """`batch` with its records area replaced, lengths and CRC fixed up."""
    head = bytearray(batch[:rec.BATCH_HEADER_SIZE])
    struct.pack_into(">i", head, 8, rec.BATCH_HEADER_SIZE - rec.LOG_OVERHEAD + len(area))
    if attributes is not None:
        struct.pack_into(">h", head, 21, attributes)
    if count is not None:
        struct.pack_into(">i", head, 57, count)
    crc = crc32c.crc32c(bytes(head[21:]) + area)
    struct.pack_into(">I", head, 17, crc)
    return bytes(head) + area


@pytest.mark.parametrize("cut", [0, 1, 11, 12, 60, 61, 62, 79])
def test_truncated_batch_raises(cut):
    with pytest.raises(CorruptRecordError):
        decode_batch(GOLDEN[:cut])


def test_wrong_crc_raises_only_when_verifying():
    bad = bytearray(GOLDEN)  # records intact, only the crc field wrong
    struct.pack_into(">I", bad, 17, GOLDEN_CRC ^ 1)
    with pytest.raises(CorruptRecordError, match="CRC"):
        decode_batch(bytes(bad))
    assert decode_batch(bytes(bad), verify_crc=False).records == decode_batch(GOLDEN).records


def test_flipped_payload_bit_fails_crc():
    bad = bytearray(GOLDEN)
    bad[-3] ^= 0x01  # inside the second record
    with pytest.raises(CorruptRecordError):
        decode_batch(bytes(bad))


def test_bad_varint_raises():
    # record length varint that never ends (11 continuation bytes)
    with pytest.raises(CorruptRecordError, match="varint"):
        decode_batch(_with_records_area(GOLDEN, b"\xff" * 11, count=1))
    # timestampDelta varlong running past the record's declared length
    with pytest.raises(CorruptRecordError):
        decode_batch(_with_records_area(GOLDEN, b"\x04\x00\x80\x80", count=1))


@pytest.mark.parametrize("area,count,match", [
    (GOLDEN_RECORDS, 3, "count"),  # more records declared than present
    (GOLDEN_RECORDS, 1, "left"),  # bytes left after the declared records
    (GOLDEN_RECORDS, -1, "count"),
    (b"\x10\x00\x00\x00\x02\x6b\x20\x76\x00", 1, "value"),  # value length 16 > record
    (b"\x0e\x00\x00\x00\x02\x6b\x02\x76\x00", 1, "varint"),  # length one short
    (b"\x12\x00\x00\x00\x02\x6b\x02\x76\x00\x00", 1, "declared"),  # one too long
    (b"\x10\x00\x00\x00\x02\x6b\x02\x76\x01", 1, "header count"),  # headers count -1
    (b"\x00", 1, "count"),  # record length 0
])
def test_malformed_records_raise(area, count, match):
    with pytest.raises(CorruptRecordError, match=match):
        decode_batch(_with_records_area(GOLDEN, area, count=count))


def test_bad_magic_compression_and_length_raise():
    bad_magic = bytearray(GOLDEN)
    bad_magic[16] = 1
    with pytest.raises(CorruptRecordError, match="magic"):
        read_batch_header(bytes(bad_magic))
    with pytest.raises(CorruptRecordError, match="compression"):
        decode_batch(_with_records_area(GOLDEN, GOLDEN_RECORDS, attributes=7))
    with pytest.raises(CorruptRecordError, match="decompress"):
        decode_batch(_with_records_area(GOLDEN, b"not gzip at all", attributes=1))
    with pytest.raises(CorruptRecordError, match="decompress"):
        decode_batch(_with_records_area(GOLDEN, b"\x82SNAPPY\x00" + bytes(8) + b"\x00\x00\x00\x02zz",
                                        attributes=2))
    short = bytearray(GOLDEN)
    struct.pack_into(">i", short, 8, 10)
    with pytest.raises(CorruptRecordError, match="length"):
        read_batch_header(bytes(short))


def test_control_record_with_short_key_raises():
    with pytest.raises(CorruptRecordError):
        rec.decode_control_record(Record(offset=0, timestamp=0, key=b"\x00", value=None))


def test_build_batch_rejects_bad_input():
    with pytest.raises(TypeError):
        build_batch([NewRecord("text")])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_batch([NewRecord(b"v")], producer_epoch=1 << 20)


# --- property -----------------------------------------------------------------------------

_maybe_bytes = st.none() | st.binary(max_size=300)
_records = st.lists(
    st.builds(
        NewRecord,
        value=_maybe_bytes,
        key=_maybe_bytes,
        headers=st.lists(st.tuples(st.text(max_size=20), _maybe_bytes), max_size=4).map(tuple),
        timestamp=st.integers(min_value=0, max_value=2**42),
    ),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(records=_records, codec=st.sampled_from(list(Compression)),
       base_offset=st.integers(min_value=0, max_value=2**62))
def test_round_trip_property(records, codec, base_offset):
    data = build_batch(records, base_offset=base_offset, compression=codec)
    header = read_batch_header(data)
    assert header.size == len(data)
    decoded = decode_records(data, header=header)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decoded] == [
        (base_offset + i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(records)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), flip=st.integers(min_value=0, max_value=10_000))
def test_arbitrary_bytes_never_raise_anything_but_corrupt_record_error(data, flip):
    candidates = [data, GOLDEN[:flip % 81] + data]
    mutated = bytearray(GOLDEN)
    mutated[flip % len(GOLDEN)] ^= (flip % 255) + 1
    candidates.append(bytes(mutated))
    for candidate in candidates:
        try:
            decode_batch(candidate, verify_crc=False)
        except CorruptRecordError:
            pass


# --- interop with another implementation (aiokafka's record code, no network) -------------


@pytest.mark.parametrize("codec", list(Compression))
def test_interop_with_aiokafka_record_batches(codec):
    aio = pytest.importorskip("aiokafka.record.default_records")
    builder = aio.DefaultRecordBatchBuilder(
        magic=2, compression_type=int(codec), is_transactional=0, producer_id=5,
        producer_epoch=1, base_sequence=7, batch_size=1 << 20)
    for i in range(3):
        builder.append(i, timestamp=TS + i, key=b"k%d" % i, value=b"v" * 300,
                       headers=[("h", b"x")])
    theirs = bytes(builder.build())
    batch = decode_batch(theirs)
    assert [(r.offset, r.key, r.timestamp, r.headers) for r in batch.records] == [
        (i, b"k%d" % i, TS + i, (("h", b"x"),)) for i in range(3)]
    assert batch.header.last_sequence == 9

    ours = build_batch([NewRecord(b"v" * 300, key=b"k%d" % i, headers=(("h", b"x"),),
                                  timestamp=TS + i) for i in range(3)], compression=codec)
    parsed = aio.DefaultRecordBatch(bytearray(ours))
    assert parsed.validate_crc()
    assert [(r.offset, r.key, r.value, r.timestamp, list(r.headers)) for r in parsed] == [
        (i, b"k%d" % i, b"v" * 300, TS + i, [("h", b"x")]) for i in range(3)]


# -- bounded decompression -----------------------------------------------------------------

BOMB = bytes(4 << 20)  # 4 MiB of zeros: a few KB compressed


@pytest.mark.parametrize("codec, xerial", [
    (Compression.GZIP, False), (Compression.SNAPPY, True), (Compression.SNAPPY, False),
    (Compression.LZ4, False), (Compression.ZSTD, False)])
def test_records_area_with_max_size_stops_a_bomb(codec, xerial):
    payload = rec._compress(codec, BOMB, xerial)
    data = _with_records_area(GOLDEN, payload, attributes=int(codec), count=1)
    with pytest.raises(rec.RecordsTooLarge):
        rec.records_area(data, max_size=1 << 20)
    # exactly at the limit is fine, one byte more is not
    assert len(rec.records_area(data, max_size=len(BOMB))) == len(BOMB)
    with pytest.raises(rec.RecordsTooLarge):
        rec.records_area(data, max_size=len(BOMB) - 1)


def test_snappy_framed_and_uncompressed_areas_are_bounded_too():
    framed = bytes(cramjam.snappy.compress(BOMB))
    data = _with_records_area(GOLDEN, framed, attributes=int(Compression.SNAPPY), count=1)
    with pytest.raises(rec.RecordsTooLarge):
        rec.records_area(data, max_size=1 << 20)
    with pytest.raises(rec.RecordsTooLarge):
        rec.records_area(GOLDEN, max_size=len(GOLDEN_RECORDS) - 1)
    assert rec.records_area(GOLDEN, max_size=len(GOLDEN_RECORDS)) == GOLDEN_RECORDS
    # a declared count that cannot fit the bound is refused before decompressing
    many = _with_records_area(GOLDEN, GOLDEN_RECORDS, count=1 << 20)
    with pytest.raises(rec.RecordsTooLarge):
        rec.records_area(many, max_size=1 << 20)


def test_null_key_indexes_checks_like_decode_and_builds_nothing():
    assert rec.null_key_indexes(GOLDEN_RECORDS, read_batch_header(GOLDEN)) == [1]
    with pytest.raises(CorruptRecordError):
        rec.null_key_indexes(GOLDEN_RECORDS[:-1], read_batch_header(GOLDEN))


@pytest.mark.parametrize("codec", list(Compression))
def test_with_compression_keeps_every_field_and_record(codec):
    header = read_batch_header(GOLDEN)
    out = rec.with_compression(GOLDEN, header, codec, GOLDEN_RECORDS)
    again = decode_batch(out)  # CRC checked
    assert again.records == decode_batch(GOLDEN).records
    assert again.header.compression is codec
    for field in ("base_offset", "partition_leader_epoch", "last_offset_delta",
                  "base_timestamp", "max_timestamp", "producer_id", "producer_epoch",
                  "base_sequence", "records_count", "timestamp_type"):
        assert getattr(again.header, field) == getattr(header, field), field
    if codec is Compression.NONE:
        assert out == GOLDEN
