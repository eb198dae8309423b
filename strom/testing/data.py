"""Test records and the checks every client test makes on what it read back.

A client test produces `samples(...)`, notes where each one landed (its delivery report:
partition and offset), reads the partitions back, turns every message into a `Got`, and calls
`check_read_back(...)`, which asserts, per partition:

- the records read are exactly the acknowledged ones, at their acknowledged offsets, in
  offset order, with no gaps or duplicates;
- within a partition, offsets follow produce order;
- key, value, headers (order and duplicates kept) and timestamp are byte-for-byte the same.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Got", "Sample", "check_read_back", "normalize_headers", "samples"]

Header = tuple[str, bytes | None]


@dataclass(frozen=True)
class Sample:
    index: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int


@dataclass(frozen=True)
class Got:
    """One record as a client returned it, normalized."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = field(default=())
    timestamp: int | None = None


def normalize_headers(headers: Iterable | None) -> tuple[Header, ...]:
    if not headers:
        return ()
    out = []
    for k, v in headers:
        if isinstance(k, bytes):
            k = k.decode()
        if isinstance(v, str):
            v = v.encode()
        out.append((k, v))
    return tuple(out)


def samples(n: int, *, tag: str = "", keys: int = 6, base_timestamp: int | None = None,
            timestamp_step: int = 1, null_header: bool = False,
            null_value_every: int = 7, value_size: int = 0) -> list[Sample]:
    """`n` keyed records with headers. Keys repeat (`keys` distinct ones) so several land in
    the same partition; every `null_value_every`-th record has a null value (a tombstone);
    headers include a duplicate key. Timestamps are `base_timestamp + i * timestamp_step`."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000) - n * timestamp_step
    out = []
    for i in range(n):
        headers: list[Header] = [
            ("idx", str(i).encode()),
            ("tag", tag.encode() or b"-"),
            ("dup", b"first"),
            ("dup", b"second"),
        ]
        if null_header:
            headers.append(("none", None))
        value: bytes | None = f"value-{tag}-{i}".encode() + b"x" * value_size
        if null_value_every and i % null_value_every == null_value_every - 1:
            value = None
        out.append(Sample(i, f"key-{i % keys}".encode(), value, tuple(headers),
                          base_timestamp + i * timestamp_step))
    return out


def check_read_back(
    sent: list[Sample],
    acked: dict[int, tuple[int, int]],
    got: list[Got],
    *,
    check_timestamps: bool = True,
    start_offsets: dict[int, int] | None = None,
) -> None:
    """`acked` maps sample index -> (partition, offset) from the delivery reports; `got` is
    everything read back (from `start_offsets[p]`, default 0, to the end)."""
    assert len(acked) == len(sent), f"only {len(acked)} of {len(sent)} records acknowledged"
    start_offsets = start_offsets or {}
    by_index = {s.index: s for s in sent}
    expected: dict[int, list[tuple[int, Sample]]] = defaultdict(list)
    for idx, (p, off) in acked.items():
        if off >= start_offsets.get(p, 0):
            expected[p].append((off, by_index[idx]))
    actual: dict[int, list[Got]] = defaultdict(list)
    for g in got:
        actual[g.partition].append(g)

    assert sorted(actual) == sorted(expected), (
        f"partitions read {sorted(actual)} != partitions written {sorted(expected)}")
    for p, exp in expected.items():
        exp.sort(key=lambda pair: pair[0])
        # produce order within a partition is offset order
        indexes = [s.index for _, s in exp]
        assert indexes == sorted(indexes), f"partition {p}: offsets do not follow produce order"
        offsets = [g.offset for g in actual[p]]
        assert offsets == [off for off, _ in exp], (
            f"partition {p}: offsets read {offsets} != acknowledged {[o for o, _ in exp]}")
        for g, (off, s) in zip(actual[p], exp, strict=True):
            where = f"partition {p} offset {off} (sample {s.index})"
            assert g.key == s.key, f"{where}: key {g.key!r} != {s.key!r}"
            assert g.value == s.value, f"{where}: value {g.value!r} != {s.value!r}"
            assert g.headers == s.headers, f"{where}: headers {g.headers!r} != {s.headers!r}"
            if check_timestamps and g.timestamp is not None:
                assert g.timestamp == s.timestamp, (
                    f"{where}: timestamp {g.timestamp} != {s.timestamp}")
