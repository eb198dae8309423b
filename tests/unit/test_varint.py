"""strom.protocol.varint: golden bytes, limits, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strom.protocol.varint import (
    INT32_MAX_BYTES,
    INT64_MAX_BYTES,
    VarintError,
    read_uvarint,
    read_varint,
    uvarint,
    varint,
)

GOLDEN = [  # (value, unsigned LEB128, zigzag LEB128)
    (0, "00", "00"),
    (1, "01", "02"),
    (63, "3f", "7e"),
    (64, "40", "8001"),
    (300, "ac02", "d804"),
    (2**31 - 1, "ffffffff07", "feffffff0f"),
]


@pytest.mark.parametrize("value, unsigned, zigzag", GOLDEN)
def test_golden_bytes(value, unsigned, zigzag):
    assert uvarint(value).hex() == unsigned
    assert varint(value).hex() == zigzag
    assert read_uvarint(bytes.fromhex(unsigned), 0, len(unsigned) // 2) == (value, len(unsigned) // 2)
    assert read_varint(bytes.fromhex(zigzag), 0, len(zigzag) // 2) == (value, len(zigzag) // 2)


def test_negative_zigzag():
    assert varint(-1).hex() == "01"
    assert varint(-(2**31)).hex() == "ffffffff0f"
    assert varint(-(2**63)) == b"\xff" * 9 + b"\x01"


@pytest.mark.parametrize("data, max_bytes, why", [
    (b"\x80", INT32_MAX_BYTES, "truncated"),
    (b"\x80" * 5 + b"\x01", INT32_MAX_BYTES, "longer"),
    (bytes.fromhex("8080808010"), INT32_MAX_BYTES, "int32"),  # 2**31 after zigzag: too big
    (b"\x80" * 10 + b"\x01", INT64_MAX_BYTES, "longer"),
])
def test_bad_varints_raise(data, max_bytes, why):
    with pytest.raises(VarintError, match=why):
        read_varint(data, 0, len(data), max_bytes)


def test_readers_never_pass_end():
    with pytest.raises(VarintError, match="truncated"):
        read_varint(b"\x80\x01", 0, 1)
    with pytest.raises(VarintError, match="truncated"):
        read_uvarint(b"\x80\x01", 0, 1)


@given(st.integers(-(2**63), 2**63 - 1))
def test_varlong_round_trip(value):
    data = varint(value)
    assert read_varint(data, 0, len(data), INT64_MAX_BYTES) == (value, len(data))
