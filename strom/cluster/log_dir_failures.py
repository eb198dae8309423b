"""The replicas that sit in failed log dirs (KIP-112), as the brokers reported them.

A broker whose log dir failed writes one event per dir under `/log_dir_event_notification`
(model.log_dir_event_path) naming the dir's partitions, and deletes its own events when it
starts again with every dir back, before it registers. So the events of the registered
brokers say, at any moment, which replicas are offline: the controller reads them to elect
(Kafka's OfflineReplica: such a replica can neither lead nor stay in the ISR) and every
broker's metadata cache reads them to answer Metadata's `offline_replicas`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from strom.cluster import model
from strom.cluster.store import MetadataStore

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


async def read(store: MetadataStore, registered: Collection[int] | None = None
               ) -> dict[TopicPartition, frozenset[int]]:
    """partition -> the brokers whose replica of it is in a failed log dir; only the
    brokers in `registered` when given (a broker that is gone is offline anyway, and a
    stale event of one that never came back must not outlive it)."""
    out: dict[TopicPartition, set[int]] = {}
    parent = model.LOG_DIR_EVENT_NOTIFICATION
    for child in await store.get_children(parent):
        node = await store.get(f"{parent}/{child}")
        if node is None:
            continue
        try:
            broker, partitions = model.decode_log_dir_event(node[0])
        except (ValueError, KeyError, TypeError):
            log.warning("Ignoring the malformed log dir event %s", child)
            continue
        if registered is not None and broker not in registered:
            continue
        for tp in partitions:
            out.setdefault(tp, set()).add(broker)
    return {tp: frozenset(b) for tp, b in out.items()}
