"""Partition reassignment (KIP-455), as Kafka's controller does it on ZooKeeper.

A reassignment of a partition from replicas OR to target RS goes in two steps:
1. the topic znode gets replicas = RS followed by the rest of OR, with
   adding_replicas = RS - OR and removing_replicas = OR - RS. The new replicas see
   themselves assigned, create the log and fetch from the leader; the leader adds them
   to the ISR once they have caught up;
2. once every replica of RS is in the ISR, the controller moves leadership into RS if the
   leader is being removed (a new leader epoch), writes replicas = RS with nothing adding
   or removing, and then shrinks the ISR to RS. Removed replicas delete their logs.

The ISR shrinks only after the assignment no longer names the removed replicas: until the
leader has seen the new assignment it still counts them as replicas, and would add a
caught-up one straight back to an ISR shrunk earlier (leaving a non-replica in the ISR for
good). Leadership moves first, since a broker deletes its log as soon as it is no longer a
replica, leader or not.

A new target for a partition that is being reassigned starts again from its original
replicas; a cancel (target None) goes back to them; replicas dropped that way leave the
leadership and the ISR in the same order. The controller checks ongoing reassignments every
half second.
"""

from __future__ import annotations

import dataclasses
import logging

from strom.cluster import model
from strom.cluster.controller_context import ControllerContext, run_periodically
from strom.cluster.store import BadVersionError
from strom.protocol.errors import (
    ErrorCode,
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    KafkaError,
    RequestTimedOut,
    UnknownTopicOrPartition,
    error,
)

log = logging.getLogger(__name__)

NoReassignmentInProgress = error(ErrorCode.no_reassignment_in_progress)

TopicPartition = tuple[str, int]
CHECK_INTERVAL_S = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class OngoingReassignment:
    topic: str
    partition: int
    replicas: tuple[int, ...]
    adding: tuple[int, ...]
    removing: tuple[int, ...]


def _original(a: model.TopicAssignment, p: int) -> tuple[int, ...]:
    adding = a.adding.get(p, ())
    return tuple(b for b in a.replicas[p] if b not in adding)


async def alter(controller: ControllerContext, changes: dict[TopicPartition, list[int] | None],
                keep_replication_factor: bool = False
                ) -> dict[TopicPartition, KafkaError | None]:
    """Start (target list) or cancel (None) reassignments; one result per partition.
    With `keep_replication_factor` (AlterPartitionReassignments v1's
    allow_replication_factor_change=false) a target must be as long as the partition's
    replica list before any ongoing reassignment."""
    controller.require_active()
    results: dict[TopicPartition, KafkaError | None] = {}
    by_topic: dict[str, dict[int, list[int] | None]] = {}
    for (name, p), target in changes.items():
        by_topic.setdefault(name, {})[p] = target
    async with controller.lock:
        live = await controller.live_set()
        for name, parts in by_topic.items():
            for _ in range(5):
                try:
                    results.update(await _alter_topic(controller, name, parts, live,
                                                      keep_replication_factor))
                    break
                except BadVersionError:
                    continue
            else:
                for p in parts:
                    results[(name, p)] = RequestTimedOut(
                        f"The assignment of {name} kept changing; try again")
        for tp, e in results.items():
            if e is None:
                await _maybe_complete(controller, *tp)
    return results


async def _alter_topic(controller: ControllerContext, name: str,
                       parts: dict[int, list[int] | None], live: set[int],
                       keep_replication_factor: bool = False
                       ) -> dict[TopicPartition, KafkaError | None]:
    store = controller.store
    node = await store.get(model.topic_path(name))
    results: dict[TopicPartition, KafkaError | None] = {}
    if node is None:
        return {(name, p): UnknownTopicOrPartition(f"Topic {name} does not exist")
                for p in parts}
    a = model.TopicAssignment.from_json(name, node[0], node[1])
    replicas, adding, removing = dict(a.replicas), dict(a.adding), dict(a.removing)
    cancelled: list[int] = []
    for p, target in parts.items():
        tp = (name, p)
        if p not in a.replicas:
            results[tp] = UnknownTopicOrPartition(f"Partition {name}-{p} does not exist")
            continue
        original = _original(a, p)
        if target is None:
            if p not in adding and p not in removing:
                results[tp] = NoReassignmentInProgress(
                    f"No reassignment of {name}-{p} is in progress")
                continue
            replicas[p] = original
            adding.pop(p, None)
            removing.pop(p, None)
            cancelled.append(p)
            results[tp] = None
            continue
        target_t = tuple(target)
        problem = None
        if not target_t:
            problem = "The replica list is empty"
        elif len(set(target_t)) != len(target_t):
            problem = f"Duplicate replica in {list(target_t)}"
        elif any(b < 0 for b in target_t):
            problem = f"Invalid broker id in {list(target_t)}"
        elif not set(target_t) <= live:
            problem = f"Unknown or offline broker(s) {sorted(set(target_t) - live)}"
        if keep_replication_factor and not problem and len(target_t) != len(original):
            results[tp] = InvalidReplicationFactor(
                f"The replication factor of {name}-{p} would change from {len(original)} to "
                f"{len(target_t)}")
            continue
        if problem:
            results[tp] = InvalidReplicaAssignment(
                f"Invalid replica assignment for {name}-{p}: {problem}")
            continue
        replicas[p] = target_t + tuple(b for b in original if b not in target_t)
        add = tuple(b for b in target_t if b not in original)
        rem = tuple(b for b in original if b not in target_t)
        adding.pop(p, None)
        removing.pop(p, None)
        if add or rem:
            adding[p], removing[p] = add, rem
        results[tp] = None
    # replicas that leave the partition (the adding ones of a replaced or cancelled
    # reassignment): leadership off them before the assignment drops them, the ISR after
    dropped = [p for (_, p), e in results.items()
               if e is None and set(a.replicas[p]) - set(replicas[p])]
    if any(e is None for e in results.values()):
        for p in dropped:
            await _fit_state(controller, name, p, replicas[p], live, shrink_isr=False)
        new = dataclasses.replace(a, replicas=replicas, adding=adding, removing=removing)
        await store.set(model.topic_path(name), new.to_json(), a.version)
        for (_, p), e in results.items():
            if e is None and p not in cancelled:
                log.info("Reassigning %s-%d: replicas %s (adding %s, removing %s)", name, p,
                         list(replicas[p]), list(adding.get(p, ())),
                         list(removing.get(p, ())))
    for p in cancelled:
        log.info("Cancelled the reassignment of %s-%d: back to %s", name, p,
                 list(replicas[p]))
    for p in dropped:
        await _fit_state(controller, name, p, replicas[p], live, shrink_isr=True)
    return results


async def _fit_state(controller: ControllerContext, name: str, p: int, replicas: tuple[int, ...],
                     live: set[int], shrink_isr: bool) -> bool:
    """Make the partition state fit `replicas`: a live leader from them (a new leader
    epoch if it moves) and, with `shrink_isr`, an ISR within them. False if no replica of
    them is live and in sync to lead."""
    ok = [True]

    def change(st: model.PartitionState) -> model.PartitionState | None:
        isr = tuple(b for b in st.isr if b in replicas) if shrink_isr else st.isr
        if st.leader in replicas and st.leader in live:
            if isr == st.isr:
                return None
            return model.PartitionState(st.leader, st.leader_epoch, isr, controller.epoch)
        candidates = [b for b in replicas if b in st.isr and b in live]
        if not candidates:
            ok[0] = False
            return None
        return model.PartitionState(candidates[0], st.leader_epoch + 1, isr, controller.epoch)

    await controller.update_state(name, p, change)
    return ok[0]


async def _maybe_complete(controller: ControllerContext, name: str, p: int) -> bool:
    """Finish the reassignment of one partition if its target replicas are all in sync."""
    store = controller.store
    node = await store.get(model.topic_path(name))
    if node is None:
        return True
    a = model.TopicAssignment.from_json(name, node[0], node[1])
    if p not in a.adding and p not in a.removing:
        return True
    target = a.target(p)
    st_node = await store.get(model.partition_state_path(name, p))
    if st_node is None:
        return False
    st = model.PartitionState.from_json(st_node[0], st_node[1])
    if not set(target) <= set(st.isr):
        return False
    live = await controller.live_set()
    if not await _fit_state(controller, name, p, target, live, shrink_isr=False):
        return False
    replicas = dict(a.replicas)
    replicas[p] = target
    adding = {k: v for k, v in a.adding.items() if k != p}
    removing = {k: v for k, v in a.removing.items() if k != p}
    new = dataclasses.replace(a, replicas=replicas, adding=adding, removing=removing)
    try:
        await store.set(model.topic_path(name), new.to_json(), a.version)
    except BadVersionError:
        return False  # another change to the topic: checked again next round
    await _fit_state(controller, name, p, target, live, shrink_isr=True)
    log.info("Reassignment of %s-%d completed: replicas %s", name, p, list(target))
    return True


async def ongoing(controller: ControllerContext, wanted: list[TopicPartition] | None = None
                  ) -> list[OngoingReassignment]:
    """Partitions with a reassignment in progress (of `wanted`, or all)."""
    store = controller.store
    names = sorted({t for t, _ in wanted}) if wanted is not None else \
        await store.get_children(model.TOPICS)
    out = []
    for name in names:
        node = await store.get(model.topic_path(name))
        if node is None:
            continue
        a = model.TopicAssignment.from_json(name, node[0], node[1])
        for p in sorted(set(a.adding) | set(a.removing)):
            if wanted is None or (name, p) in wanted:
                out.append(OngoingReassignment(name, p, a.replicas[p], a.adding.get(p, ()),
                                               a.removing.get(p, ())))
    return out


async def progress_loop(controller: ControllerContext) -> None:
    """The controller's check of ongoing reassignments."""
    await run_periodically(controller, "Checking reassignments", log,
                           lambda: CHECK_INTERVAL_S, progress_once)


async def progress_once(controller: ControllerContext) -> list[TopicPartition]:
    """One check: finish every reassignment whose target replicas are all in sync; returns
    the partitions with none left (finished now, or before). The metadata cache says which
    topics have moves in progress: no store reads while there are none."""
    pending = [(t.name, p) for t in list(controller.cache.topics.values())
               for p in sorted(t.reassigning)]
    done = []
    for name, p in pending:
        async with controller.lock:
            if await _maybe_complete(controller, name, p):
                done.append((name, p))
    return done
