"""What a handler sees of the broker for one request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from strom.api.fetch_session import FetchSessionCache
from strom.protocol.messages import RequestHeader

if TYPE_CHECKING:
    from strom.clock import Clock
    from strom.cluster.broker_configs import DynamicBrokerConfigs
    from strom.cluster.controller import Controller
    from strom.cluster.metadata_cache import MetadataCache
    from strom.config import BrokerConfig
    from strom.coordinator.group_coordinator import GroupCoordinator
    from strom.coordinator.producer_ids import ProducerIdManager
    from strom.coordinator.transaction_coordinator import TransactionCoordinator
    from strom.log.manager import LogManager
    from strom.replication.replica_manager import ReplicaManager
    from strom.security.authorizer import Authorizer
    from strom.security.quotas import ClientQuotaManager


@dataclass(frozen=True, slots=True)
class BrokerServices:
    """The broker's domain objects, shared by every handler (built by server/broker.py)."""

    broker_id: int
    config: BrokerConfig
    clock: Clock
    cache: MetadataCache
    controller: Controller
    replicas: ReplicaManager
    logs: LogManager
    producer_ids: ProducerIdManager
    groups: GroupCoordinator
    transactions: TransactionCoordinator
    dynamic_configs: DynamicBrokerConfigs | None = None
    fetch_sessions: FetchSessionCache = field(
        default_factory=lambda: FetchSessionCache(1000, time.monotonic))
    authorizer: Authorizer | None = None  # None: authorizer.class.name is not set
    quotas: ClientQuotaManager | None = None


@dataclass(slots=True)
class RequestContext:
    header: RequestHeader
    broker: BrokerServices
    client_host: str
    listener: str  # the listener the client connected to: endpoints are given for it
    # Produce (acks=all) calls this once its records are appended and only the wait for
    # replication is left: the connection may then start on its next Produce request
    appended: Callable[[], None] | None = None
    # who sent the request: "User:<name>" from SASL or a client certificate, else
    # "User:ANONYMOUS" (as Kafka's KafkaPrincipal.ANONYMOUS)
    principal: str = "User:ANONYMOUS"
    # called with a throttle time (ms) when the client is over a quota: the connection
    # then reads no further request for that long (KIP-219)
    throttled: Callable[[int], None] | None = None

    @property
    def version(self) -> int:
        return self.header.api_version
