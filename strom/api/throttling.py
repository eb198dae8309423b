"""Recording a request against the client's quotas (strom.security.quotas), for handlers."""

from __future__ import annotations

from strom.api.context import RequestContext
from strom.security.quotas import FETCH as FETCH_QUOTA
from strom.security.quotas import PRODUCE as PRODUCE_QUOTA

__all__ = ["FETCH_QUOTA", "PRODUCE_QUOTA", "fetch_bytes_cap", "record_quota",
           "unrecord_quota"]


def record_quota(ctx: RequestContext, key: str, value: float) -> int:
    """Record `value` (bytes) against the client's quota `key`; the throttle time in ms,
    also reported to the connection (`RequestContext.throttled`) so it mutes the channel."""
    quotas = ctx.broker.quotas
    if quotas is None or ctx.throttled is None or not quotas.quotas:
        return 0
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
