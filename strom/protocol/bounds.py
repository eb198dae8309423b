"""Length checks on a request (and on a response to strom's own client) before kio
parses it.

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
or a frame that ends early, and for more than MAX_TAGGED_FIELDS tagged fields in one
request. It does not check values: kio does that when it parses. On the way it notes the
tagged fields a request's version does not know: Kafka's readers skip them (KIP-482 lets a
newer client send tags an older broker does not know), kio refuses them, so
`check_request` returns the frame without them for kio to read. (A tag inside a known
tagged field's value is not dropped: that field's size would change.)
`check_response` makes the length checks on a response frame that strom's inter-broker
client (strom.protocol.client) receives: a leader or coordinator that sends garbage must
cost the follower a connection, never its process.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import types
import typing
from typing import Any

from strom.protocol.varint import VarintError, read_uvarint, uvarint

_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "uint32": 4,
          "float64": 8, "bool": 1, "uuid": 16, "timedelta_i32": 4, "timedelta_i64": 8,
          "datetime_i64": 8, "error_code": 2}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
# tagged fields in one request, all sections together: a real client sends a few; a frame
# of two-byte tags would otherwise hold the loop for seconds per 10 MB
MAX_TAGGED_FIELDS = 100_000

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


# Each schema is compiled once, the first time a request of it arrives, into Python source
# that skips its fields in order with the position in a local variable: no per-field
# dispatch, no cursor object, so a small request is checked in a few microseconds (the
# interpreted walk this replaced cost about three times as much, bench/request_cost.py).
# The source is made only from the schema's own field kinds, never from request bytes.


def _short(pos: int, end: int) -> LengthError:
    return LengthError(f"the frame ends at {end}, a field needs bytes up to {pos}")


def _too_many(n: int, pos: int, end: int) -> LengthError:
    return LengthError(f"a collection of {n} elements at {pos}, but only {end - pos} bytes "
                       "remain")


def _uvarint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    try:
        return read_uvarint(buf, pos, end)
    except VarintError as e:
        raise LengthError(f"{e} at {pos}") from None


class _Source:
    """The lines of one generated checker function."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def length(self, depth: int, flexible: bool, legacy: int) -> None:
        """n = a length prefix (-1: null), pos after it."""
        if flexible:  # a one-byte varint inline, longer ones through read_uvarint
            self.emit(depth, "if pos >= end: raise _short(pos + 1, end)")
            self.emit(depth, "n = buf[pos]")
            self.emit(depth, "if n < 0x80: pos += 1")
            self.emit(depth, "else: n, pos = _uvarint(buf, pos, end)")
            self.emit(depth, "n -= 1")
        else:
            self.emit(depth, f"if pos + {legacy} > end: raise _short(pos + {legacy}, end)")
            self.emit(depth, f"n = {'_I16' if legacy == 2 else '_I32'}.unpack_from(buf, pos)[0]")
            self.emit(depth, f"pos += {legacy}")

    def skip(self, depth: int) -> None:
        """Skip n bytes when n > 0."""
        self.emit(depth, "if n > 0:")
        self.emit(depth + 1, "pos += n")
        self.emit(depth + 1, "if pos > end: raise _short(pos, end)")

    def field(self, depth: int, kind: int, arg: Any, nullable: bool, flexible: bool,
              refs: dict[str, Any]) -> None:
        if kind == _FIX:
            self.emit(depth, f"pos += {arg}")
            self.emit(depth, "if pos > end: raise _short(pos, end)")
        elif kind in (_STR, _BYTES):
            self.length(depth, flexible, 2 if kind == _STR else 4)
            self.skip(depth)
        elif kind == _ENTITY:
            name = _ref(refs, arg)
            if nullable:
                self.emit(depth, "if pos >= end: raise _short(pos + 1, end)")
                self.emit(depth, "pos += 1")
                self.emit(depth, "if buf[pos - 1] < 0x80:  # int8 marker: -1 is null")
                self.emit(depth + 1, f"pos = {name}(buf, pos, end, found)")
            else:
                self.emit(depth, f"pos = {name}(buf, pos, end, found)")
        else:
            self.length(depth, flexible, 4)
            if kind == _ARRAY_FIX:
                self.emit(depth, "if n > 0:")
                self.emit(depth + 1, f"if n * {arg} > end - pos: raise _too_many(n, pos, end)")
                self.emit(depth + 1, f"pos += n * {arg}")
                return
            self.emit(depth, "if n > end - pos: raise _too_many(n, pos, end)")
            self.emit(depth, "for _ in range(n):")
            if kind == _ARRAY_ENTITY:
                self.emit(depth + 1, f"pos = {_ref(refs, arg)}(buf, pos, end, found)")
            else:
                self.field(depth + 1, _STR if kind == _ARRAY_STR else _BYTES, None, False,
                           flexible, refs)


def _ref(refs: dict[str, Any], cls: type) -> str:
    """The name under which a generated function calls the checker of entity `cls`
    (compiled first: Kafka's schemas nest but never recurse)."""
    name = f"_entity{len(refs)}"
    refs[name] = _checker(cls)
    return name


@functools.cache
def _checker(cls: type):
    """The compiled checker of one kio entity class: (buf, pos, end, found=None) -> pos
    after it; the sections with unknown tags go into `found` when it is a list."""
    plan = _plan(cls)
    src, refs = _Source(), {}
    src.emit(0, "def check(buf, pos, end, found=None):")
    for kind, arg, nullable in plan.fields:
        src.field(1, kind, arg, nullable, plan.flexible, refs)
    if plan.flexible:  # tagged fields: mostly none, a single zero byte
        src.emit(1, "if pos < end and buf[pos] == 0: pos += 1")
        src.emit(1, "else: pos = _tagged(buf, pos, end, _plan_, found)")
    src.emit(1, "return pos")
    namespace = {"_I16": _I16, "_I32": _I32, "_short": _short, "_too_many": _too_many,
                 "_uvarint": _uvarint, "_tagged": _tagged, "_plan_": plan, **refs}
    exec("\n".join(src.lines), namespace)  # noqa: S102 - source made from the schema only
    return namespace["check"]


def _tagged(buf: bytes | memoryview, pos: int, end: int, plan: _Plan | None,
            found: _WithoutUnknownTags | None = None) -> int:
    """Past a tagged-field section; with `found`, a section holding tags `plan` does not
    know (without a plan, the request header's: every tag) is copied to it without them."""
    count_at = pos
    n, pos = _uvarint(buf, pos, end)
    if n * 2 > end - pos:
        raise _too_many(n, pos, end)
    if found is not None:
        found.tags += n
        if found.tags > MAX_TAGGED_FIELDS:
            raise LengthError(f"more than {MAX_TAGGED_FIELDS} tagged fields in a request")
    tags_at = pos
    unknown = 0
    for _ in range(n):
        tag, pos = _uvarint(buf, pos, end)
        size, pos = _uvarint(buf, pos, end)
        start, pos = pos, pos + size
        if pos > end:
            raise _short(pos, end)
        entry = plan.tagged.get(tag) if plan is not None else None
        if entry is not None:  # a known tagged field: its own lengths are checked too
            _tagged_field(*entry)(buf, start, pos)  # (tags inside it are not dropped)
        else:
            unknown += 1
    if unknown and found is not None:
        found.drop(buf, count_at, tags_at, pos, n - unknown, plan)
    return pos


class _WithoutUnknownTags:
    """The request frame being rebuilt without its unknown tagged fields: the sections
    that hold some are copied as `_tagged` meets them (in the frame's order, each section's
    count lowered), the bytes between them as they are. Nothing is kept per tag, so a
    frame of millions of tags costs no more memory than its own size."""

    __slots__ = ("out", "copied", "tags")

    def __init__(self) -> None:
        self.out: bytearray | None = None  # made when a first section is dropped
        self.copied = 0  # the frame's bytes before this are in `out`
        self.tags = 0  # tagged fields met so far, known or not (MAX_TAGGED_FIELDS)

    def drop(self, buf: bytes | memoryview, count_at: int, tags_at: int, end: int,
             kept: int, plan: _Plan | None) -> None:
        out = self.out
        if out is None:
            out = self.out = bytearray()
        out += buf[self.copied:count_at]
        out += uvarint(kept)
        pos = tags_at
        while pos < end:  # read and checked by `_tagged` already
            tag_at = pos
            tag, pos = read_uvarint(buf, pos, end)
            size, pos = read_uvarint(buf, pos, end)
            pos += size
            if plan is not None and tag in plan.tagged:
                out += buf[tag_at:pos]
        self.copied = end

    def frame(self, buf: bytes | memoryview) -> bytes | None:
        """The frame without its unknown tags, or None when it had none."""
        out = self.out
        if out is None:
            return None
        out += buf[self.copied:]
        return bytes(out)


@functools.cache
def _tagged_field(kind: int, arg: Any, nullable: bool):
    """A checker of one tagged field's value (always in a flexible version)."""
    src, refs = _Source(), {}
    src.emit(0, "def check(buf, pos, end, found=None):")
    src.field(1, kind, arg, nullable, True, refs)
    src.emit(1, "return pos")
    namespace = {"_I16": _I16, "_I32": _I32, "_short": _short, "_too_many": _too_many,
                 "_uvarint": _uvarint, **refs}
    exec("\n".join(src.lines), namespace)  # noqa: S102 - source made from the schema only
    return namespace["check"]


def check_request(frame: bytes | memoryview, schema: type) -> bytes | None:
    """Check every length prefix of a request frame (without its size) for `schema`, the
    kio request class of its API key and version. Raises LengthError. Returns the frame
    without the tagged fields the schema does not know, as Kafka's readers skip them
    (KIP-482) and kio refuses them; None when there are none."""
    end = len(frame)
    if end < 10:
        raise _short(10, end)
    pos = 10 + max(_I16.unpack_from(frame, 8)[0], 0)  # api key, version, correlation, client id
    if pos > end:
        raise _short(pos, end)
    if not schema.__header_schema__.__flexible__:  # no tagged fields in this version
        _checker(schema)(frame, pos, end)
        return None
    found = _WithoutUnknownTags()
    pos = _tagged(frame, pos, end, None, found)
    _checker(schema)(frame, pos, end, found)
    return found.frame(frame)


def check_response(frame: bytes | memoryview, schema: type) -> None:
    """Check every length prefix of a response frame (without its size) for `schema`, the
    kio response class of its API key and version. Raises LengthError."""
    end = len(frame)
    pos = 4  # correlation id
    if pos > end:
        raise _short(pos, end)
    if schema.__header_schema__.__flexible__:
        pos = _tagged(frame, pos, end, None)
    _checker(schema)(frame, pos, end)
