"""Helpers for a handler's per-topic and per-partition answers.

Domain code raises typed KafkaErrors; a handler answers per topic or partition, and a
KafkaError for one of them becomes its error code while the rest are answered as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from strom.cluster.store import FencedError, StoreError
from strom.protocol.errors import ErrorCode, KafkaError

T = TypeVar("T")

log = logging.getLogger(__name__)


def attempt(call: Callable[..., T], *args, failed: T) -> tuple[T, int]:
    """(call(*args), NONE), or (`failed`, its error code) when it raises a KafkaError."""
    try:
        return call(*args), ErrorCode.none
    except KafkaError as e:
        return failed, e.code


def request_error(exc: KafkaError | StoreError) -> KafkaError:
    """The KafkaError a request answers for `exc`. A metadata store failure under an admin
    request (ZooKeeper unreachable for zookeeper.connection.timeout.ms, its session expired)
    is REQUEST_TIMED_OUT, retriable as in Kafka (whether a write went through is unknown);
    a write fenced off because this broker stopped being the controller is NOT_CONTROLLER."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, FencedError):
        return KafkaError(f"This broker is no longer the controller: {exc}",
                          ErrorCode.not_controller)
    if type(exc) is StoreError:
        return KafkaError(f"The metadata store did not answer: {exc}",
                          ErrorCode.request_timed_out)
    return KafkaError(f"Unexpected metadata store error: {type(exc).__name__}: {exc}",
                      ErrorCode.unknown_server_error)


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


async def refresh_after_write(ctx, topics: set[str]) -> None:
    """Load `topics` into the metadata cache now, so the answer to an admin request that
    wrote them already shows them. If the store does not answer, the request's answer
    stands (what it wrote is decided) and the cache catches up in the background."""
    try:
        await ctx.broker.cache.refresh_now(topics)
    except StoreError as e:
        log.info("Metadata of %s not reloaded after an admin request (retried in the "
                 "background): %s", sorted(topics), e)
