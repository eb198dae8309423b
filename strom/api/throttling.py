"""Recording a request against the client's quotas (strom.security.quotas), for handlers."""

from __future__ import annotations

from strom.api.context import RequestContext
from strom.protocol.errors import ErrorCode, KafkaError
from strom.security.quotas import FETCH as FETCH_QUOTA
from strom.security.quotas import MUTATION as MUTATION_QUOTA
from strom.security.quotas import PRODUCE as PRODUCE_QUOTA

__all__ = ["FETCH_QUOTA", "PRODUCE_QUOTA", "ControllerMutationQuota", "fetch_bytes_cap",
           "quota_applies", "record_quota", "unrecord_quota"]


def quota_applies(ctx: RequestContext) -> bool:
    """Whether `record_quota` may throttle this request (some client quota is set): else
    the caller need not count what it would record."""
    quotas = ctx.broker.quotas
    return quotas is not None and ctx.throttled is not None and bool(quotas.quotas)


def record_quota(ctx: RequestContext, key: str, value: float) -> int:
    """Record `value` (bytes) against the client's quota `key`; the throttle time in ms,
    also reported to the connection (`RequestContext.throttled`) so it mutes the channel."""
    if not quota_applies(ctx):
        return 0
    quotas = ctx.broker.quotas
    throttle_ms = quotas.record(key, ctx.principal, ctx.header.client_id or "", value)
    if throttle_ms:
        ctx.throttled(throttle_ms)
    return throttle_ms


def unrecord_quota(ctx: RequestContext, key: str, value: float) -> None:
    quotas = ctx.broker.quotas
    if quotas is not None:
        quotas.unrecord(key, ctx.principal, ctx.header.client_id or "", value)


def fetch_bytes_cap(ctx: RequestContext, max_bytes: int, replica_id: int) -> int:
    """A consumer's max_bytes, capped at what its consumer_byte_rate allows within the
    measured windows (as Kafka's fetch path)."""
    quotas = ctx.broker.quotas
    if replica_id >= 0 or quotas is None or not quotas.quotas:
        return max_bytes
    cap = quotas.max_window_value(FETCH_QUOTA, ctx.principal, ctx.header.client_id or "")
    return max_bytes if cap is None else max(1, min(max_bytes, int(cap)))


class ControllerMutationQuota:
    """One request's controller_mutation_rate (KIP-599), as Kafka's Strict- and
    PermissiveControllerMutationQuota. Strict (CreateTopics v6+, CreatePartitions v3+,
    DeleteTopics v5+, whose clients know THROTTLING_QUOTA_EXCEEDED): a mutation while the
    client's bucket is below zero is refused with that error and the throttle time; one that
    starts within the quota is taken whole, even past it. Permissive (older versions): every
    mutation is taken and the client is throttled once past the quota."""

    def __init__(self, ctx: RequestContext, strict_since: int) -> None:
        self.ctx = ctx
        self.strict = ctx.version >= strict_since
        quotas = ctx.broker.quotas
        self.enabled = (quotas is not None and ctx.throttled is not None
                        and quotas.bound(MUTATION_QUOTA, ctx.principal,
                                         ctx.header.client_id or "") is not None)

    def record(self, partitions: int) -> None:
        """Count `partitions` created or deleted; KafkaError THROTTLING_QUOTA_EXCEEDED when
        a strict quota is already exceeded (nothing is counted then)."""
        if not self.enabled or partitions <= 0:
            return
        quotas, ctx = self.ctx.broker.quotas, self.ctx
        client_id = ctx.header.client_id or ""
        if self.strict:
            throttle_ms = quotas.mutation_throttle(ctx.principal, client_id)
            if throttle_ms:
                ctx.throttled(throttle_ms)
                raise KafkaError("The throttling quota has been exceeded.",
                                 ErrorCode.throttling_quota_exceeded)
            quotas.record_mutation(ctx.principal, client_id, partitions)
        else:
            throttle_ms = quotas.record_mutation(ctx.principal, client_id, partitions)
            if throttle_ms:
                ctx.throttled(throttle_ms)
