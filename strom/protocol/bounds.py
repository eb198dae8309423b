"""Length checks on a request before kio parses it.

kio's native reader sizes a collection from its length prefix before reading it: an array
(or string, or bytes) whose prefix says billions of elements makes it ask for that much
memory at once, and a failed allocation aborts the process (Rust's `handle_alloc_error`).
A compact (flexible) array length is a varint of up to 35 bits, so 5 bytes are enough to
ask for 137 GB; a legacy int32 array of 2^31 - 1 elements asks for 17 GB, which fails on a
machine with less memory than that. Kafka's generated readers refuse such lengths: "Tried to
allocate a collection of size N, but there are only M bytes remaining."

`check_request` walks the request header and body as the schema says, reading only the
length prefixes and skipping the rest, and raises `LengthError` for a length that does not
fit in the bytes left (an element takes at least one byte), a varint longer than 5 bytes,
or a frame that ends early. It does not check values: kio does that when it parses.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import types
import typing
from typing import Any

from strom.protocol.varint import VarintError, read_uvarint

_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "uint32": 4,
          "float64": 8, "bool": 1, "uuid": 16, "timedelta_i32": 4, "timedelta_i64": 8,
          "datetime_i64": 8}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

# plan entries: (kind, arg, nullable)
_FIX, _STR, _BYTES, _ENTITY, _ARRAY_FIX, _ARRAY_STR, _ARRAY_BYTES, _ARRAY_ENTITY = range(8)
_ARRAY_OF = {_FIX: _ARRAY_FIX, _STR: _ARRAY_STR, _BYTES: _ARRAY_BYTES, _ENTITY: _ARRAY_ENTITY}


class LengthError(ValueError):
    """A length prefix that does not fit in the frame, or a frame cut short."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    flexible: bool
    fields: tuple[tuple[int, Any, bool], ...]
    tagged: dict[int, tuple[int, Any, bool]]


def _field_plan(tp: Any, kafka_type: str | None) -> tuple[int, Any, bool]:
    args = typing.get_args(tp)
    nullable = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    if nullable:
        tp = next(a for a in args if a is not type(None))
    array = typing.get_origin(tp) is tuple
    if array:
        tp = typing.get_args(tp)[0]
    if dataclasses.is_dataclass(tp):
        kind, arg = _ENTITY, tp
    elif kafka_type == "string":
        kind, arg = _STR, None
    elif kafka_type in ("bytes", "records"):
        kind, arg = _BYTES, None
    else:
        kind, arg = _FIX, _FIXED[kafka_type]
    return (_ARRAY_OF[kind] if array else kind), arg, nullable


@functools.cache
def _plan(cls: type) -> _Plan:
    hints = typing.get_type_hints(cls)
    fields, tagged = [], {}
    for f in dataclasses.fields(cls):
        entry = _field_plan(hints[f.name], f.metadata.get("kafka_type"))
        if "tag" in f.metadata:
            tagged[f.metadata["tag"]] = entry
        elif entry[0] == _FIX and fields and fields[-1][0] == _FIX:
            fields[-1] = (_FIX, fields[-1][1] + entry[1], False)  # one skip for a run
        else:
            fields.append(entry)
    return _Plan(bool(cls.__flexible__), tuple(fields), tagged)


class _Cursor:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | memoryview, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or self.end - start < n:
            raise LengthError(f"{n} bytes wanted at {start}, {self.end - start} left")
        self.pos = start + n
        return start

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.buf, self.pos, self.end)
        except VarintError as e:
            raise LengthError(f"{e} at {self.pos}") from None
        return value

    def length(self, compact: bool, legacy: struct.Struct) -> int:
        """A length prefix (-1: null)."""
        if compact:
            return self.uvarint() - 1
        return legacy.unpack_from(self.buf, self.take(legacy.size))[0]

    def count(self, n: int, min_size: int) -> None:
        if n * min_size > self.end - self.pos:
            raise LengthError(f"a collection of {n} elements at {self.pos}, but only "
                              f"{self.end - self.pos} bytes remain")


def _value(c: _Cursor, kind: int, arg: Any, nullable: bool, flexible: bool) -> None:
    if kind == _FIX:
        c.take(arg)
    elif kind == _STR:
        n = c.length(flexible, _I16)
        if n >= 0:
            c.take(n)
    elif kind == _BYTES:
        n = c.length(flexible, _I32)
        if n >= 0:
            c.take(n)
    elif kind == _ENTITY:
        if nullable and c.buf[c.take(1)] >= 0x80:  # int8 marker: -1 is null
            return
        _entity(c, _plan(arg))
    else:
        n = c.length(flexible, _I32)
        if n < 0:
            return
        if kind == _ARRAY_FIX:
            c.count(n, arg)
            c.take(n * arg)
            return
        c.count(n, 1)
        for _ in range(n):
            if kind == _ARRAY_ENTITY:
                _entity(c, _plan(arg))
            else:
                _value(c, _STR if kind == _ARRAY_STR else _BYTES, None, False, flexible)


def _entity(c: _Cursor, plan: _Plan) -> None:
    for kind, arg, nullable in plan.fields:
        _value(c, kind, arg, nullable, plan.flexible)
    if plan.flexible:
        _tagged(c, plan)


def _tagged(c: _Cursor, plan: _Plan | None) -> None:
    n = c.uvarint()
    c.count(n, 2)
    for _ in range(n):
        tag = c.uvarint()
        size = c.uvarint()
        start = c.take(size)
        entry = plan.tagged.get(tag) if plan is not None else None
        if entry is not None:
            _value(_Cursor(c.buf, start, start + size), *entry, True)


def check_request(frame: bytes | memoryview, schema: type) -> None:
    """Check every length prefix of a request frame (without its size) for `schema`, the
    kio request class of its API key and version. Raises LengthError."""
    c = _Cursor(frame, 0, len(frame))
    c.take(8)  # api key, api version, correlation id
    n = c.length(False, _I16)  # client id: a legacy string in every header version
    if n >= 0:
        c.take(n)
    if schema.__header_schema__.__flexible__:
        _tagged(c, None)
    _entity(c, _plan(schema))
