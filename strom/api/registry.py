"""The registry of API handlers: each API module registers the versions it serves.

ApiVersions is answered from these registrations, so there is no second list. A handler is
`async def handle(ctx, request) -> response`, where the response is a kio entity of the
request's version, or a `RawResponse` (Fetch frames its own bytes for zero-copy).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strom.protocol.messages import kio_versions

if TYPE_CHECKING:
    from strom.api.context import RequestContext

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ApiSpec:
    api_key: int
    name: str
    min_version: int  # advertised
    max_version: int
    min_parsed: int  # the lowest version actually served (Produce advertises 0, serves 3+)
    handler: Handler


HANDLERS: dict[int, ApiSpec] = {}


class CloseConnection(Exception):
    """Raised by a handler when Kafka would close the connection instead of answering
    (a failed acks=0 produce: the only way to tell the producer)."""


def register(api_key: int, name: str, min_version: int, max_version: int,
             advertised_min: int | None = None) -> Callable[[Handler], Handler]:
    """Register a handler for versions min..max (clamped to what kio parses)."""
    kio_min, kio_max = kio_versions(name)
    served_min = max(min_version, kio_min)
    served_max = min(max_version, kio_max)

    def decorate(handler: Handler) -> Handler:
        if api_key in HANDLERS:
            raise ValueError(f"API {api_key} ({name}) is registered twice")
        HANDLERS[api_key] = ApiSpec(
            api_key, name, served_min if advertised_min is None else advertised_min,
            served_max, served_min, handler)
        return handler

    return decorate


def load_all() -> dict[int, ApiSpec]:
    """Import every API module so each registers itself."""
    from strom.api import (  # noqa: F401
        acls,
        add_offsets_to_txn,
        add_partitions_to_txn,
        admin_configs,
        api_versions,
        client_quotas,
        consumer_group_describe,
        consumer_group_heartbeat,
        create_partitions,
        create_topics,
        delete_records,
        delete_topics,
        describe_cluster,
        describe_log_dirs,
        describe_producers,
        describe_topic_partitions,
        describe_transactions,
        elect_leaders,
        end_txn,
        fetch,
        find_coordinator,
        group_admin,
        heartbeat,
        init_producer_id,
        join_group,
        leave_group,
        list_offsets,
        list_transactions,
        metadata,
        offset_commit,
        offset_fetch,
        offset_for_leader_epoch,
        partition_reassignments,
        produce,
        sasl,
        scram_credentials,
        sync_group,
        txn_offset_commit,
        write_txn_markers,
    )

    return HANDLERS
