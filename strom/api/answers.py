"""Helpers for a handler's per-topic and per-partition answers.

Domain code raises typed KafkaErrors; a handler answers per topic or partition, and a
KafkaError for one of them becomes its error code while the rest are answered as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from strom.protocol.errors import ErrorCode, KafkaError

T = TypeVar("T")


def attempt(call: Callable[..., T], *args, failed: T) -> tuple[T, int]:
    """(call(*args), NONE), or (`failed`, its error code) when it raises a KafkaError."""
    try:
        return call(*args), ErrorCode.none
    except KafkaError as e:
        return failed, e.code


def each_partition(topics: Iterable, answer: Callable, topic_answer: Callable) -> tuple:
    """The answers to a request's topics, in its order: `topic_answer(t, partitions)` where
    `partitions` holds `answer(t, p)` for each partition `p` of topic `t`."""
    return tuple(topic_answer(t, tuple(answer(t, p) for p in t.partitions)) for t in topics)


def fenced(code: int, version: int, since: int) -> int:
    """PRODUCER_FENCED for versions from `since` on (KIP-588), INVALID_PRODUCER_EPOCH for
    older clients, which do not know the newer code; other codes unchanged."""
    if code == ErrorCode.producer_fenced and version < since:
        return ErrorCode.invalid_producer_epoch
    return code
