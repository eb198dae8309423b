"""Kafka error codes and the typed exceptions domain code raises.

`ErrorCode` is kio's generated enum (one member per Kafka error code, with `retriable`).
Domain code raises `KafkaError` subclasses; API handlers turn them into codes in responses;
the dispatcher alone logs unexpected exceptions and answers UNKNOWN_SERVER_ERROR.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode", "KafkaError", "error", "kafka_error"]


class KafkaError(Exception):
    """A failure that maps to one Kafka error code; `message` goes to the client."""

    code: ErrorCode = ErrorCode.unknown_server_error

    def __init__(self, message: str | None = None, code: ErrorCode | None = None) -> None:
        super().__init__(message or "")
        if code is not None:
            self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}: {self.message!r})"


_classes: dict[ErrorCode, type[KafkaError]] = {}


def error(code: ErrorCode) -> type[KafkaError]:
    """The KafkaError subclass for one code, e.g. `error(ErrorCode.corrupt_message)`."""
    cls = _classes.get(code)
    if cls is None:
        name = "".join(part.title() for part in code.name.split("_")) + "Error"
        cls = type(name, (KafkaError,), {"code": code})
        _classes[code] = cls
    return cls


def kafka_error(code: ErrorCode, message: str | None = None) -> KafkaError:
    """An error to raise for `code` (of its `error(code)` class) with `message` for the
    client, e.g. `raise kafka_error(ErrorCode.unknown_member_id)`."""
    return error(code)(message)


# The ones domain code raises most, by name.
OffsetOutOfRange = error(ErrorCode.offset_out_of_range)
CorruptMessage = error(ErrorCode.corrupt_message)
UnknownTopicOrPartition = error(ErrorCode.unknown_topic_or_partition)
NotLeaderOrFollower = error(ErrorCode.not_leader_or_follower)
MessageTooLarge = error(ErrorCode.message_too_large)
InvalidTopic = error(ErrorCode.invalid_topic_exception)
RecordListTooLarge = error(ErrorCode.record_list_too_large)
InvalidRequiredAcks = error(ErrorCode.invalid_required_acks)
InvalidPartitions = error(ErrorCode.invalid_partitions)
InvalidReplicationFactor = error(ErrorCode.invalid_replication_factor)
InvalidReplicaAssignment = error(ErrorCode.invalid_replica_assignment)
InvalidConfig = error(ErrorCode.invalid_config)
InvalidRequest = error(ErrorCode.invalid_request)
TopicAlreadyExists = error(ErrorCode.topic_already_exists)
InvalidRecord = error(ErrorCode.invalid_record)
InvalidTimestamp = error(ErrorCode.invalid_timestamp)
UnsupportedForMessageFormat = error(ErrorCode.unsupported_for_message_format)
OutOfOrderSequence = error(ErrorCode.out_of_order_sequence_number)
DuplicateSequence = error(ErrorCode.duplicate_sequence_number)
InvalidProducerEpoch = error(ErrorCode.invalid_producer_epoch)
ProducerFenced = error(ErrorCode.producer_fenced)
UnknownProducerId = error(ErrorCode.unknown_producer_id)
InvalidProducerIdMapping = error(ErrorCode.invalid_producer_id_mapping)
InvalidTxnState = error(ErrorCode.invalid_txn_state)
TransactionCoordinatorFenced = error(ErrorCode.transaction_coordinator_fenced)
TransactionalIdAuthorizationFailed = error(ErrorCode.transactional_id_authorization_failed)
FencedLeaderEpoch = error(ErrorCode.fenced_leader_epoch)
UnknownLeaderEpoch = error(ErrorCode.unknown_leader_epoch)
UnknownTopicId = error(ErrorCode.unknown_topic_id)
InconsistentTopicId = error(ErrorCode.inconsistent_topic_id)
KafkaStorageError = error(ErrorCode.kafka_storage_error)
NotController = error(ErrorCode.not_controller)
RequestTimedOut = error(ErrorCode.request_timed_out)
PolicyViolation = error(ErrorCode.policy_violation)
UnsupportedVersion = error(ErrorCode.unsupported_version)
ResourceNotFound = error(ErrorCode.resource_not_found)
InvalidRegularExpression = error(ErrorCode.invalid_regular_expression)
