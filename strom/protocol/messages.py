"""Request and response framing on top of kio's generated message types.

A Kafka frame is `int32 size` followed by the request header and body. The header schema
(v1 or v2, i.e. with or without tagged fields) follows from the request schema's
`__header_schema__`; likewise the response header (v0 or v1). ApiVersions always answers
with response header v0, which kio's ApiVersionsResponse already declares.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass
from typing import Any

from kio.index import UnknownAPIKey, UnknownEntity, load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from strom.protocol.bounds import LengthError, check_request, check_response
from strom.protocol.errors import ErrorCode
from strom.protocol.varint import read_uvarint

_HEAD = struct.Struct(">hhi")
_INT32 = struct.Struct(">i")


class MalformedRequest(Exception):
    """The frame cannot be parsed: the connection is closed."""


class UnsupportedRequest(Exception):
    """Unknown API key or a version kio cannot parse."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int) -> None:
        super().__init__(f"api_key={api_key} version={api_version}")
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def api_name(api_key: int) -> str:
    return api_key_map.get(api_key, f"unknown({api_key})")


def kio_versions(api_name_: str) -> tuple[int, int]:
    """The (min, max) versions kio can parse for an API name such as 'produce'."""
    versions = schema_name_map[api_name_]
    return min(versions), max(versions)


@functools.cache
def request_schema(api_key: int, api_version: int) -> type:
    return load_request_schema(api_key, api_version)


@functools.cache
def response_schema(api_key: int, api_version: int) -> type:
    return load_response_schema(api_key, api_version)


@functools.cache
def _reader(cls: type) -> Any:
    return entity_reader(cls)


@functools.cache
def _writer(cls: type) -> Any:
    return entity_writer(cls)


def peek_header(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) of a request frame (without its size)."""
    if len(frame) < 8:
        raise MalformedRequest(f"frame of {len(frame)} bytes is shorter than a request header")
    return _HEAD.unpack_from(frame, 0)


_INT16 = struct.Struct(">h")


def peek_produce_acks(frame: bytes | bytearray | memoryview) -> int | None:
    """The `acks` of a Produce request frame (v3+), read without parsing the request:
    the request header (client_id, then tagged fields from v9), transactional_id, acks.
    None when the frame is too short or odd; the full parse then reports it."""
    try:
        version = _INT16.unpack_from(frame, 2)[0]
        pos = 8
        length = _INT16.unpack_from(frame, pos)[0]  # client_id: a legacy nullable string
        pos += 2 + max(length, 0)
        if version >= 9:  # request header v2: tagged fields; compact transactional_id
            end = len(frame)
            count, pos = read_uvarint(frame, pos, end)
            for _ in range(count):
                _tag, pos = read_uvarint(frame, pos, end)
                size, pos = read_uvarint(frame, pos, end)
                pos += size
            length, pos = read_uvarint(frame, pos, end)
            pos += max(length - 1, 0)
        else:
            length = _INT16.unpack_from(frame, pos)[0]
            pos += 2 + max(length, 0)
        return _INT16.unpack_from(frame, pos)[0]
    except (struct.error, IndexError, ValueError):
        return None


def parse_request(frame: bytes | memoryview) -> tuple[RequestHeader, Any]:
    """Parse a request frame (without the 4-byte size) into (header, kio request entity).

    Raises UnsupportedRequest for an API key or version kio does not know and
    MalformedRequest for bytes that do not parse.
    """
    api_key, api_version, correlation_id = peek_header(frame)
    frame = _read_only(frame)
    try:
        schema = request_schema(api_key, api_version)
    except (UnknownAPIKey, UnknownEntity):
        raise UnsupportedRequest(api_key, api_version, correlation_id) from None
    try:
        # before kio sizes anything from a length prefix; tags this version does not
        # know are skipped, as Kafka's readers skip them
        without_unknown_tags = check_request(frame, schema)
    except LengthError as e:
        raise MalformedRequest(f"{api_name(api_key)} v{api_version}: {e}") from None
    if without_unknown_tags is not None:
        frame = without_unknown_tags
    try:
        header, offset = _reader(schema.__header_schema__)(frame, 0)
        body, _size = _reader(schema)(frame, offset)
    except Exception as e:  # SerialError, and ValueError/TypeError from the native reader
        raise MalformedRequest(f"{api_name(api_key)} v{api_version}: {e!r}") from e
    missing = _null_in_non_nullable(body)
    if missing is not None:  # as Kafka's generated readers: a parse error
        raise MalformedRequest(f"{api_name(api_key)} v{api_version}: non-nullable field "
                               f"{missing} was serialized as null")
    # Like Kafka, bytes after the body are ignored (librdkafka sends a few on Metadata v12).
    return RequestHeader(api_key, api_version, correlation_id, header.client_id), body


@functools.cache
def _nullability(cls: type) -> tuple[tuple[str, bool, type | None], ...]:
    """(field, nullable, entity class of its items) for each array, string or bytes field
    of a kio entity, and each nested entity field."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp)
        nullable = typing.get_origin(tp) in (typing.Union, types.UnionType) and \
            type(None) in args
        if nullable:
            tp = next(a for a in args if a is not type(None))
        item = None
        if typing.get_origin(tp) is tuple:
            first = typing.get_args(tp)[0]
            item = first if dataclasses.is_dataclass(first) else None
        elif dataclasses.is_dataclass(tp):
            item = tp
        elif not (isinstance(tp, type) and issubclass(tp, str | bytes)):
            continue
        plan.append((f.name, nullable, item))
    return tuple(plan)


def _null_in_non_nullable(entity: Any) -> str | None:
    """The name of a non-nullable array, string, bytes or struct field that kio's reader
    returned as None (its length was -1), else None."""
    for name, nullable, item in _nullability(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if not nullable:
                return name
            continue
        if item is not None:
            for child in (value if isinstance(value, tuple) else (value,)):
                missing = _null_in_non_nullable(child)
                if missing is not None:
                    return f"{name}.{missing}"
    return None


def encode_response(correlation_id: int, response: Any) -> bytes:
    """Frame a kio response entity: size, response header, body."""
    cls = type(response)
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    buf.write(_INT32.pack(correlation_id))
    if cls.__header_schema__.__flexible__:
        buf.write(b"\0")  # no tagged fields in response header v1
    _writer(cls)(buf, response)
    data = buf.getbuffer()
    _INT32.pack_into(data, 0, len(data) - 4)
    del data
    return buf.getvalue()


_INT64 = struct.Struct(">q")


class ResponseTemplate:
    """A response kio encoded once, whose int64 fields are patched for each use: for a
    response sent again and again with only a few numbers changed (a one-partition
    Produce answer differs only in its correlation id, base offset and log start offset),
    patching the bytes costs a fraction of encoding the entity anew.

    `build` encodes `response` (whose patched fields hold the distinct `sentinels`) and
    finds each sentinel's bytes; `render` gives the framed response with the correlation
    id and the given values in their place. A sentinel that is not found exactly once makes
    `build` return None (the caller then encodes as usual).
    """

    __slots__ = ("data", "positions")

    def __init__(self, data: bytes, positions: tuple[int, ...]) -> None:
        self.data = data
        self.positions = positions

    @classmethod
    def build(cls, response: Any, sentinels: tuple[int, ...]) -> ResponseTemplate | None:
        data = encode_response(0, response)
        positions = []
        for value in sentinels:
            needle = _INT64.pack(value)
            at = data.find(needle, 8)
            if at < 0 or data.find(needle, at + 1) >= 0:
                return None
            positions.append(at)
        return cls(data, tuple(positions))

    def render(self, correlation_id: int, *values: int) -> bytes:
        out = bytearray(self.data)
        _INT32.pack_into(out, 4, correlation_id)
        for at, value in zip(self.positions, values, strict=True):
            _INT64.pack_into(out, at, value)
        return bytes(out)


def response_header_flexible(api_key: int, api_version: int) -> bool:
    return response_schema(api_key, api_version).__header_schema__.__flexible__


# --- the client side: encoding requests, parsing responses ----------------------------------
class MalformedResponse(Exception):
    """A response frame that does not parse as the expected API and version."""


def request_api(request: Any) -> tuple[int, int]:
    """(api_key, api_version) of a kio request entity."""
    cls = type(request)
    if getattr(cls, "__type__", None) is not EntityType.request:
        raise TypeError(f"{cls.__name__} is not a kio request entity")
    return int(cls.__api_key__), int(cls.__version__)


def encode_request(correlation_id: int, client_id: str | None, request: Any) -> bytes:
    """Frame a kio request entity: size, request header (v1, or v2 for a flexible request,
    as the schema's `__header_schema__` says), body."""
    cls = type(request)
    api_key, api_version = request_api(request)
    header_cls = cls.__header_schema__
    header = make(header_cls, request_api_key=api_key, request_api_version=api_version,
                  correlation_id=correlation_id, client_id=client_id)
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    _writer(header_cls)(buf, header)
    _writer(cls)(buf, request)
    data = buf.getbuffer()
    _INT32.pack_into(data, 0, len(data) - 4)
    del data
    return buf.getvalue()


def expects_response(request: Any) -> bool:
    """False for the one request Kafka never answers: Produce with acks=0."""
    return not (type(request).__api_key__ == 0 and getattr(request, "acks", 1) == 0)


def response_correlation_id(frame: bytes | memoryview) -> int:
    """The correlation id of a response frame (without its size)."""
    if len(frame) < 4:
        raise MalformedResponse(f"frame of {len(frame)} bytes is shorter than a response header")
    return _INT32.unpack_from(frame, 0)[0]


def _read_only(frame: bytes | bytearray | memoryview) -> bytes | memoryview:
    """kio's native readers take read-only buffers: a bytearray frame (read in place by
    strom.protocol.framing) is viewed read-only, not copied."""
    if isinstance(frame, bytes):
        return frame
    return memoryview(frame).toreadonly()


def _parse_body(api_key: int, api_version: int, frame: bytes | memoryview) -> Any:
    frame = _read_only(frame)
    schema = response_schema(api_key, api_version)
    check_response(frame, schema)  # before kio sizes anything from a length prefix
    _header, offset = _reader(schema.__header_schema__)(frame, 0)
    body, _size = _reader(schema)(frame, offset)
    missing = _null_in_non_nullable(body)
    if missing is not None:  # callers read it as a value: refuse it here, as a request
        raise LengthError(f"non-nullable field {missing} was serialized as null")
    return body


def parse_response(api_key: int, api_version: int, frame: bytes | memoryview) -> Any:
    """Parse a response frame (without its size) to the kio response entity of
    `api_version`; the response header is v0 or v1 as the schema says (always v0 for
    ApiVersions). Like Kafka's client, an ApiVersions response that does not parse at the
    version asked is read as v0: a broker answers a version it does not serve with a v0
    body and UNSUPPORTED_VERSION. Raises MalformedResponse."""
    try:
        return _parse_body(api_key, api_version, frame)
    except Exception as e:  # SerialError, and ValueError/TypeError from the native reader
        if api_key == 18 and api_version != 0:
            try:
                return _parse_body(api_key, 0, frame)
            except Exception:
                pass
        raise MalformedResponse(f"{api_name(api_key)} v{api_version} response: {e!r}") from e


__all__ = [
    "EntityType",
    "ErrorCode",
    "MalformedRequest",
    "MalformedResponse",
    "RequestHeader",
    "UnsupportedRequest",
    "api_name",
    "encode_request",
    "encode_response",
    "expects_response",
    "has_field",
    "kio_versions",
    "make",
    "parse_request",
    "parse_response",
    "peek_header",
    "request_api",
    "request_module",
    "request_schema",
    "response_correlation_id",
    "response_module",
    "response_schema",
]


_ZERO = __import__("datetime").timedelta(0)


@functools.cache
def _field_info(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    import dataclasses

    names = frozenset(f.name for f in dataclasses.fields(cls))
    required = frozenset(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
    return names, required


def make(cls: type, **values: Any) -> Any:
    """Build a kio entity from keyword values, dropping fields this version lacks.

    A missing `throttle_time` is zero. This lets one handler fill every version's response.
    """
    names, required = _field_info(cls)
    kwargs = {k: v for k, v in values.items() if k in names}
    if "throttle_time" in required and "throttle_time" not in kwargs:
        kwargs["throttle_time"] = _ZERO
    return cls(**kwargs)


def has_field(cls: type, name: str) -> bool:
    return name in _field_info(cls)[0]


@functools.cache
def response_module(api_key: int, api_version: int) -> Any:
    """The kio module holding a response's nested entity classes."""
    import sys

    return sys.modules[response_schema(api_key, api_version).__module__]


@functools.cache
def request_module(api_key: int, api_version: int) -> Any:
    """The kio module holding a request's nested entity classes (e.g. Fetch's FetchTopic
    and FetchPartition), for callers that build requests without importing kio."""
    import sys

    return sys.modules[request_schema(api_key, api_version).__module__]
