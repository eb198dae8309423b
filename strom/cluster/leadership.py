"""Leader elections asked for by operators, and the automatic preferred-leader rebalance.

ElectLeaders (kafka-leader-election / `strom leader-election`):
- preferred: make the first replica of the assignment the leader, if it is live and in
  the ISR (PREFERRED_LEADER_NOT_AVAILABLE otherwise; ELECTION_NOT_NEEDED if it already
  leads);
- unclean: give a partition without a live leader one: a live ISR member if there is one,
  else any live replica (ELIGIBLE_LEADERS_NOT_AVAILABLE if none; ELECTION_NOT_NEEDED if
  the leader is live).
A replica in a failed log dir (KIP-112, log_dir_failures.py) counts as not live in both.

auto.leader.rebalance.enable: every leader.imbalance.check.interval.seconds the
controller counts, per broker, the partitions it is the preferred leader of but does not
lead; above leader.imbalance.per.broker.percentage it runs a preferred election for them.
All writes go through the controller's update_state (compare-and-set, fenced by its
epoch); the controller is seen only through ControllerContext (controller_context.py).
"""

from __future__ import annotations

import logging

from strom.cluster import log_dir_failures, model, reassignment
from strom.cluster.controller_context import ControllerContext, run_periodically
from strom.protocol.errors import (
    ErrorCode,
    InvalidRequest,
    KafkaError,
    UnknownTopicOrPartition,
    error,
)

log = logging.getLogger(__name__)

PREFERRED = 0
UNCLEAN = 1

PreferredLeaderNotAvailable = error(ErrorCode.preferred_leader_not_available)
ElectionNotNeeded = error(ErrorCode.election_not_needed)
EligibleLeadersNotAvailable = error(ErrorCode.eligible_leaders_not_available)

TopicPartition = tuple[str, int]


async def elect_leaders(controller: ControllerContext, election_type: int,
                        partitions: list[TopicPartition] | None
                        ) -> dict[TopicPartition, KafkaError | None]:
    """Run an election for each partition (all partitions when None)."""
    controller.require_active()
    if election_type not in (PREFERRED, UNCLEAN):
        raise InvalidRequest(f"Unknown election type {election_type}")
    store = controller.store
    results: dict[TopicPartition, KafkaError | None] = {}
    async with controller.lock:
        live = await controller.live_set()
        failed = await log_dir_failures.read(store, live)  # KIP-112: these cannot lead
        assignments: dict[str, model.TopicAssignment | None] = {}
        if partitions is None:
            partitions = []
            for name in await store.get_children(model.TOPICS):
                a = await _assignment(controller, name)
                assignments[name] = a
                if a is not None:
                    partitions += [(name, p) for p in sorted(a.replicas)]
        for tp in partitions:
            name, p = tp
            if name not in assignments:
                assignments[name] = await _assignment(controller, name)
            a = assignments[name]
            if a is None or p not in a.replicas:
                results[tp] = UnknownTopicOrPartition(
                    f"The partition {name}-{p} does not exist.")
                continue
            results[tp] = await _elect_one(controller, tp, a.replicas[p],
                                           live - failed.get(tp, frozenset()), election_type)
    return results


async def _assignment(controller: ControllerContext, name: str) -> model.TopicAssignment | None:
    node = await controller.store.get(model.topic_path(name))
    return model.TopicAssignment.from_json(name, node[0], node[1]) if node else None


async def _elect_one(controller: ControllerContext, tp: TopicPartition, replicas: tuple[int, ...],
                     live: set[int], election_type: int) -> KafkaError | None:
    outcome: list[KafkaError | None] = [None]

    def change(st: model.PartitionState) -> model.PartitionState | None:
        if election_type == PREFERRED:
            preferred = replicas[0]
            if st.leader == preferred:
                outcome[0] = ElectionNotNeeded(
                    f"Leader {preferred} is already the preferred replica of {tp[0]}-{tp[1]}")
                return None
            if preferred not in live or preferred not in st.isr:
                outcome[0] = PreferredLeaderNotAvailable(
                    f"Failed to elect leader for partition {tp[0]}-{tp[1]} under strategy "
                    f"PreferredReplicaPartitionLeaderElectionStrategy: preferred replica "
                    f"{preferred} is not live or not in the ISR {list(st.isr)}")
                return None
            outcome[0] = None
            return model.PartitionState(preferred, st.leader_epoch + 1, st.isr,
                                        controller.epoch)
        if st.leader in live:
            outcome[0] = ElectionNotNeeded(f"{tp[0]}-{tp[1]} has a live leader {st.leader}")
            return None
        in_sync = [b for b in replicas if b in live and b in st.isr]
        if in_sync:
            outcome[0] = None
            return model.PartitionState(in_sync[0], st.leader_epoch + 1,
                                        tuple(b for b in st.isr if b in live),
                                        controller.epoch)
        candidates = [b for b in replicas if b in live]
        if not candidates:
            outcome[0] = EligibleLeadersNotAvailable(
                f"No live replica of {tp[0]}-{tp[1]} can lead")
            return None
        log.warning("Unclean leader election for %s-%d asked for: broker %d was not in the "
                    "ISR %s; acknowledged records may be lost", tp[0], tp[1], candidates[0],
                    list(st.isr))
        outcome[0] = None
        return model.PartitionState(candidates[0], st.leader_epoch + 1, (candidates[0],),
                                    controller.epoch)

    written = await controller.update_state(tp[0], tp[1], change)
    if written is None and outcome[0] is None:
        # the state znode is missing, or kept changing under us: nothing was elected
        return EligibleLeadersNotAvailable(
            f"The state of {tp[0]}-{tp[1]} could not be updated; try again")
    return outcome[0]


async def rebalance_loop(controller: ControllerContext) -> None:
    """auto.leader.rebalance.enable: the controller's periodic preferred election."""
    config = controller.config
    await run_periodically(
        controller, "Leader rebalance", log,
        lambda: config.get("leader.imbalance.check.interval.seconds"), rebalance_once,
        enabled=lambda: config.get("auto.leader.rebalance.enable"))


async def rebalance_once(controller: ControllerContext) -> list[TopicPartition]:
    """Preferred elections for brokers whose imbalance exceeds the configured percentage;
    returns the partitions whose leadership moved. As Kafka, partitions being reassigned
    are left alone (their first replica is the target's, not yet the preferred one)."""
    cache = controller.cache
    live = set(controller.live_brokers())
    threshold = controller.config.get("leader.imbalance.per.broker.percentage") / 100
    moving = {(r.topic, r.partition) for r in await reassignment.ongoing(controller)}
    per_broker: dict[int, list[TopicPartition]] = {}
    totals: dict[int, int] = {}
    for t in cache.topics.values():
        for p, info in t.partitions.items():
            if not info.replicas or (t.name, p) in moving:
                continue
            preferred = info.replicas[0]
            totals[preferred] = totals.get(preferred, 0) + 1
            if info.leader != preferred and preferred in live and preferred in info.isr \
                    and preferred not in cache.failed_replicas.get((t.name, p), ()):
                per_broker.setdefault(preferred, []).append((t.name, p))
    wanted = []
    for broker, tps in per_broker.items():
        if len(tps) / totals[broker] > threshold:
            wanted += tps
    if not wanted:
        return []
    log.info("Leader imbalance: moving %d partitions back to their preferred leader",
             len(wanted))
    results = await elect_leaders(controller, PREFERRED, wanted)
    return [tp for tp, e in results.items() if e is None]
