"""Record parsers of `strom dump-log`: what `key:` and `payload:` print for a record.

Kafka's kafka-dump-log has the same three:
- the default: key and value as UTF-8 text (invalid bytes replaced);
- `--offsets-decoder` (`__consumer_offsets`): the key as `{"type":"V","data":{...}}` and
  the value as `{"version":"V","data":{...}}`, compact JSON with the field names of
  Kafka's OffsetCommitKey/Value and GroupMetadataKey/Value schemas (fields of the record's
  version only); a group member's subscription and assignment are decoded as consumer
  protocol JSON when the group's protocol type is "consumer" (else, or when they do not
  parse, they stay base64 bytes); a tombstone's payload is `<DELETE>`;
- `--transaction-log-decoder` (`__transaction_state`): the key as
  `transaction_metadata::transactionalId=ID`, the value as
  `producerId:P,producerEpoch:E,state=S,partitions=[t-0,...],txnLastUpdateTimestamp=T,
  txnTimeoutMs=M` (one line), a tombstone as `<DELETE>`.
A record that does not decode prints Kafka's `Error at offset N, skipping. REASON` (or
`Unknown record type V at offset N, skipping.`) as its key and no payload.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable

from strom.coordinator import offsets_format as offsets
from strom.coordinator import transaction_log as txnlog
from strom.coordinator.transaction_metadata import TxnState

# (key text or None, payload text or None) of one record
Parser = Callable[[int, bytes | None, bytes | None], tuple[str | None, str | None]]

DELETE = "<DELETE>"


def _text(data: bytes) -> str:
    """Kafka's StringDecoder: UTF-8, invalid bytes replaced."""
    return data.decode("utf-8", errors="replace")


def plain(offset: int, key: bytes | None, value: bytes | None) -> tuple[str | None, str | None]:
    return (None if key is None else _text(key), None if value is None else _text(value))


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


# --- __consumer_offsets -----------------------------------------------------------------------


def offsets_record(offset: int, key: bytes | None,
                   value: bytes | None) -> tuple[str | None, str | None]:
    if key is None:
        return (f"Failed to decode message at offset {offset} using offset topic decoder "
                "(message had a missing key)", None)
    try:
        key_version = struct.unpack_from(">h", key)[0]
        if key_version not in (0, 1, 2):
            return f"Unknown record type {key_version} at offset {offset}, skipping.", None
        k = offsets.read_key(key)
        if isinstance(k, offsets.OffsetKey):
            key_text = _json({"type": str(key_version), "data": {
                "group": k.group, "topic": k.topic, "partition": k.partition}})
            payload = DELETE if value is None else _offset_value(value)
        else:
            key_text = _json({"type": str(key_version), "data": {"group": k.group}})
            payload = DELETE if value is None else _group_value(value)
    except (offsets.FormatError, struct.error, UnicodeDecodeError) as exc:
        return f"Error at offset {offset}, skipping. {exc}", None
    return key_text, payload


def _offset_value(value: bytes) -> str:
    version = struct.unpack_from(">h", value)[0]
    if not 0 <= version <= 3:
        raise offsets.FormatError(f"unknown offset commit value version {version}")
    v = offsets.read_offset_value(value)
    data: dict = {"offset": v.offset}
    if version >= 3:
        data["leaderEpoch"] = v.leader_epoch
    data["metadata"] = v.metadata
    data["commitTimestamp"] = v.commit_timestamp
    if version == 1:  # the expire timestamp follows the commit timestamp
        data["expireTimestamp"] = struct.unpack_from(">q", value, len(value) - 8)[0]
    return _json({"version": str(version), "data": data})


def _group_value(value: bytes) -> str:
    version = struct.unpack_from(">h", value)[0]
    if not 0 <= version <= 3:
        raise offsets.FormatError(f"unknown group metadata value version {version}")
    g = offsets.read_group_value(value)
    consumer = g.protocol_type == "consumer"
    members = []
    for m in g.members:
        member: dict = {"memberId": m.member_id}
        if version >= 3:
            member["groupInstanceId"] = m.group_instance_id
        member["clientId"] = m.client_id
        member["clientHost"] = m.client_host
        if version >= 1:
            member["rebalanceTimeout"] = m.rebalance_timeout
        member["sessionTimeout"] = m.session_timeout
        member["subscription"] = (_decoded(_subscription, m.subscription) if consumer
                                  else _b64(m.subscription))
        member["assignment"] = (_decoded(_assignment, m.assignment) if consumer
                                else _b64(m.assignment))
        members.append(member)
    data: dict = {"protocolType": g.protocol_type, "generation": g.generation,
                  "protocol": g.protocol, "leader": g.leader}
    if version >= 2:
        data["currentStateTimestamp"] = g.state_timestamp
    data["members"] = members
    return _json({"version": str(version), "data": data})


class _Reader(offsets._Reader):
    """The consumer protocol's non-flexible encoding (the offsets topic's primitives, plus
    nullable bytes and bounded arrays)."""

    def _raw(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise ValueError("runs past the end")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw

    def nbytes(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else self._raw(n)

    def count(self) -> int:
        n = self.i32()
        if n > len(self.data) - self.pos:
            raise ValueError(f"array of {n} in {len(self.data) - self.pos} bytes")
        return max(n, 0)

    def partitions(self) -> list[dict]:
        return [{"topic": self.string(), "partitions": [self.i32() for _ in range(self.count())]}
                for _ in range(self.count())]


def _decoded(parse: Callable[[_Reader, int], dict], data: bytes) -> dict | str | None:
    """Kafka replaces a consumer group member's bytes by their JSON when they parse."""
    try:
        r = _Reader(data)
        version = r.i16()
        return parse(r, version)
    except (ValueError, struct.error, UnicodeDecodeError):
        return _b64(data)


def _subscription(r: _Reader, version: int) -> dict:
    out: dict = {"topics": [r.string() for _ in range(r.count())], "userData": _b64(r.nbytes())}
    if version >= 1:
        out["ownedPartitions"] = r.partitions()
    if version >= 2:
        out["generationId"] = r.i32()
    if version >= 3:
        out["rackId"] = r.string()
    return out


def _assignment(r: _Reader, version: int) -> dict:
    return {"assignedPartitions": r.partitions(), "userData": _b64(r.nbytes())}


# --- __transaction_state ----------------------------------------------------------------------


def transaction_record(offset: int, key: bytes | None,
                       value: bytes | None) -> tuple[str | None, str | None]:
    try:
        if key is None:
            raise txnlog.FormatError("missing key")
        version = struct.unpack_from(">h", key)[0]
        if version != txnlog.KEY_VERSION:
            return f"unknown::version={version}", None
        txn_id = txnlog.read_key(key)
        if value is None:
            return f"transaction_metadata::transactionalId={txn_id}", DELETE
        v = txnlog.read_value(value)
    except (txnlog.FormatError, struct.error, UnicodeDecodeError) as exc:
        return f"Error at offset {offset}, skipping. {exc}", None
    try:
        state = TxnState(v.status).kafka_name
    except ValueError:
        state = f"Unknown({v.status})"
    partitions = ",".join(f"{t}-{p}" for t, p in v.partitions)
    return (f"transaction_metadata::transactionalId={txn_id}",
            f"producerId:{v.producer_id},producerEpoch:{v.producer_epoch},state={state},"
            f"partitions=[{partitions}],txnLastUpdateTimestamp={v.last_update_ms},"
            f"txnTimeoutMs={v.timeout_ms}")
