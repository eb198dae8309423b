"""strom.coordinator.offsets_format: the records of __consumer_offsets, pinned with golden
bytes laid out by hand from Kafka's schemas (group-coordinator/src/main/resources/common/
message/OffsetCommitKey.json, OffsetCommitValue.json, GroupMetadataKey.json,
GroupMetadataValue.json): the key's int16 version is the record type (0/1 offset commit,
2 group metadata), a value's int16 version selects its fields. Kafka writes offset values
at v3 (v1 when an expire timestamp is set) and group values at v3."""

from __future__ import annotations

import pytest

from strom.coordinator import offsets_format as fmt

TS = 1_700_000_000_000  # 0x0000018BCFE56800


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


# OffsetCommitKey v1: version | group "g" | topic "t" | partition 3
OFFSET_KEY = h("0001 | 0001 67 | 0001 74 | 00000003")
# OffsetCommitValue v3: version | offset 42 | leaderEpoch 5 | metadata "m" | commitTimestamp
OFFSET_VALUE_V3 = h("0003 | 000000000000002a | 00000005 | 0001 6d | 0000018bcfe56800")
# GroupMetadataKey v2: version | group "g"
GROUP_KEY = h("0002 | 0001 67")
# GroupMetadataValue v3: version | protocolType "consumer" | generation 7 | protocol "range" |
# leader "m1" | currentStateTimestamp | members: count 1, memberId "m1", groupInstanceId
# "i" | clientId "c" | clientHost "/h" | rebalanceTimeout 300000 | sessionTimeout 45000 |
# subscription 00 01 | assignment (empty)
GROUP_VALUE_V3 = h(
    "0003 | 0008 636f6e73756d6572 | 00000007 | 0005 72616e6765 | 0002 6d31 |"
    "0000018bcfe56800 | 00000001 | 0002 6d31 | 0001 69 | 0001 63 | 0002 2f68 |"
    "000493e0 | 0000afc8 | 00000002 0001 | 00000000")
MEMBER = fmt.MemberValue("m1", "i", "c", "/h", 300_000, 45_000, b"\x00\x01", b"")
GROUP = fmt.GroupValue("consumer", 7, "range", "m1", TS, (MEMBER,))


def test_offset_commit_key_v1():
    assert fmt.offset_key("g", "t", 3) == OFFSET_KEY
    assert fmt.read_key(OFFSET_KEY) == fmt.OffsetKey("g", "t", 3)
    # v0 has the same layout
    assert fmt.read_key(h("0000 0001 67 0001 74 00000003")) == fmt.OffsetKey("g", "t", 3)


def test_offset_commit_value_v3():
    value = fmt.OffsetValue(42, 5, "m", TS)
    assert fmt.offset_value(value) == OFFSET_VALUE_V3
    assert fmt.read_offset_value(OFFSET_VALUE_V3) == value


def test_group_metadata_key_v2():
    assert fmt.group_key("g") == GROUP_KEY
    assert fmt.read_key(GROUP_KEY) == fmt.GroupKey("g")


def test_group_metadata_value_v3():
    assert fmt.group_value(GROUP) == GROUP_VALUE_V3
    assert fmt.read_group_value(GROUP_VALUE_V3) == GROUP


def test_group_metadata_value_v3_nulls_and_no_members():
    # an Empty group: protocol and leader null (-1), no members
    empty = fmt.GroupValue("consumer", 8, None, None, TS, ())
    raw = h("0003 0008 636f6e73756d6572 00000008 ffff ffff 0000018bcfe56800 00000000")
    assert fmt.group_value(empty) == raw
    assert fmt.read_group_value(raw) == empty
    static_less = fmt.MemberValue("m1", None, "c", "/h", 1, 2, b"", b"\x09")
    raw = fmt.group_value(fmt.GroupValue("", 1, "p", "m1", -1, (static_less,)))
    assert raw.endswith(h("0002 6d31 ffff 0001 63 0002 2f68 00000001 00000002 00000000 "
                          "00000001 09"))


@pytest.mark.parametrize("raw, expected", [
    # v0: offset | metadata | commitTimestamp
    (h("0000 000000000000002a 0001 6d 0000018bcfe56800"), fmt.OffsetValue(42, -1, "m", TS)),
    # v1: offset | metadata | commitTimestamp | expireTimestamp (ignored)
    (h("0001 000000000000002a 0001 6d 0000018bcfe56800 0000018bcfe56418"),
     fmt.OffsetValue(42, -1, "m", TS)),
    # v2: offset | metadata | commitTimestamp
    (h("0002 000000000000002a 0000 0000018bcfe56800"), fmt.OffsetValue(42, -1, "", TS)),
])
def test_older_offset_values(raw, expected):
    assert fmt.read_offset_value(raw) == expected


def test_older_group_values():
    # v0: no currentStateTimestamp, no rebalanceTimeout, no groupInstanceId
    v0 = h("0000 0008 636f6e73756d6572 00000007 0005 72616e6765 0002 6d31 00000001 "
           "0002 6d31 0001 63 0002 2f68 0000afc8 00000002 0001 00000000")
    assert fmt.read_group_value(v0) == fmt.GroupValue(
        "consumer", 7, "range", "m1", -1,
        (fmt.MemberValue("m1", None, "c", "/h", 0, 45_000, b"\x00\x01", b""),))
    # v1 adds rebalanceTimeout; v2 adds currentStateTimestamp
    v2 = h("0002 0008 636f6e73756d6572 00000007 0005 72616e6765 0002 6d31 "
           "0000018bcfe56800 00000001 0002 6d31 0001 63 0002 2f68 000493e0 0000afc8 "
           "00000002 0001 00000000")
    assert fmt.read_group_value(v2) == fmt.GroupValue(
        "consumer", 7, "range", "m1", TS,
        (fmt.MemberValue("m1", None, "c", "/h", 300_000, 45_000, b"\x00\x01", b""),))


@pytest.mark.parametrize("raw", [
    h("0003 0001 67"),  # a key version this coordinator does not write or read
    h("0001 0005 67"),  # a string running past the end
    h("00"),
])
def test_unreadable_keys(raw):
    with pytest.raises(fmt.FormatError):
        fmt.read_key(raw)


def test_truncated_values():
    with pytest.raises(fmt.FormatError):
        fmt.read_offset_value(OFFSET_VALUE_V3[:-1])
    with pytest.raises(fmt.FormatError):
        fmt.read_group_value(GROUP_VALUE_V3[:20])
    cut = fmt.group_value(fmt.GroupValue("consumer", 7, "range", "m1", TS, (
        fmt.MemberValue("m1", None, "c", "/h", 1, 2, b"", b"\x09\x09"),)))[:-1]
    with pytest.raises(fmt.FormatError):  # the last member's assignment cut short
        fmt.read_group_value(cut)
