"""api/answers.py: metadata store failures under admin requests as Kafka errors."""

from __future__ import annotations

from strom.api.answers import request_error
from strom.cluster.store import FencedError, NodeExistsError, StoreError
from strom.protocol.errors import ErrorCode, KafkaError


def test_store_errors_become_kafka_errors():
    timed_out = request_error(StoreError("zookeeper get /x: ConnectionLoss"))
    assert timed_out.code == ErrorCode.request_timed_out
    assert "ConnectionLoss" in timed_out.message
    assert request_error(FencedError("/controller_epoch")).code == ErrorCode.not_controller
    # a node error escaping the controller is a bug: unknown, but still an answer
    assert request_error(NodeExistsError("/x")).code == ErrorCode.unknown_server_error


def test_kafka_errors_pass_unchanged():
    e = KafkaError("bad", ErrorCode.invalid_request)
    assert request_error(e) is e
