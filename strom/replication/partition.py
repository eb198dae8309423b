"""Partition: one replica of a topic partition on this broker, and its replication state.

The leader appends produced batches, tracks each follower's log end offset from the
offsets the follower fetches at, and moves the high watermark to the minimum log end
offset over the ISR. A follower copies the leader's batches (see fetcher.py) and keeps
min(leader's high watermark, own log end offset) as its high watermark.

    leader epoch   bumped by the controller at every leader change
    ISR            in-sync replicas; acks=all waits for all of them. The leader proposes
                   ISR changes (written to the partition state znode with compare-and-set
                   by the ReplicaManager); the in-memory ISR changes once the write landed
    high watermark what consumers may read; never moves backwards on a leader

Owned by the ReplicaManager (event loop).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from strom.cluster.model import PartitionState
from strom.log.partition_log import AppendResult, PartitionLog
from strom.metrics.stats import TopicStats
from strom.protocol.batch import BatchHeader
from strom.protocol.errors import (
    ErrorCode,
    NotLeaderOrFollower,
    OffsetOutOfRange,
    PolicyViolation,
    UnknownLeaderEpoch,
    error,
)

log = logging.getLogger(__name__)

NotEnoughReplicas = error(ErrorCode.not_enough_replicas)


@dataclass(slots=True)
class ReplicaState:
    """What the leader knows of one follower."""

    broker_id: int
    log_end_offset: int = -1
    last_caught_up_ms: int = 0
    last_fetch_leader_end_offset: int = -1
    last_fetch_ms: int = 0
    log_start_offset: int = -1  # as its last valid fetch reported it (-1: not yet)


class Partition:
    def __init__(self, topic: str, index: int, topic_id: uuid.UUID, log_: PartitionLog,
                 broker_id: int) -> None:
        self.topic = topic
        self.index = index
        self.topic_id = topic_id
        self.log = log_
        self.broker_id = broker_id
        self.leader = -1
        self.leader_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.state_version = -1  # the partition state znode's version we last saw
        self.controller_epoch = 0
        self.followers: dict[int, ReplicaState] = {}
        self.pending_isr: tuple[int, ...] | None = None  # an ISR write in flight
        self.stats = TopicStats()  # the ReplicaManager gives it its topic's shared stats

    def __repr__(self) -> str:
        return f"{self.topic}-{self.index}"

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    # --- role changes (from the partition state znode) -------------------------------------
    def make_leader(self, state: PartitionState, replicas: tuple[int, ...], now_ms: int
                    ) -> bool:
        """Apply a state naming this broker leader; True if leadership is new (a new
        epoch), False if only the ISR or replicas moved within the same epoch.

        A state of this epoch older than the one this leader holds (a lower znode
        version: read by a metadata refresh before this leader's own ISR write landed)
        is not applied, as Kafka ignores a LeaderAndIsr with an older partition epoch:
        it would bring back the old ISR and version, and each ISR write after it would
        fail on the stale version until the next refresh."""
        new = not self.is_leader or state.leader_epoch != self.leader_epoch
        if not new and 0 <= state.version < self.state_version:
            log.debug("%s: ignoring the older state version %d (holding %d)", self,
                      state.version, self.state_version)
            self.replicas = replicas
        else:
            self._apply_state(self.broker_id, state, replicas)
        if new:
            # as Kafka: every follower is given until now + replica.lag.time.max.ms
            self.followers = {b: ReplicaState(b, last_caught_up_ms=now_ms)
                              for b in replicas if b != self.broker_id}
            self.log.assign_epoch_start(state.leader_epoch, self.log.log_end_offset)
            log.info("%s: leader at epoch %d, ISR %s, log end offset %d", self,
                     state.leader_epoch, list(state.isr), self.log.log_end_offset)
        else:
            for b in replicas:
                if b != self.broker_id and b not in self.followers:
                    self.followers[b] = ReplicaState(b, last_caught_up_ms=now_ms)
            for b in list(self.followers):
                if b not in replicas:
                    del self.followers[b]
        self.maybe_increment_high_watermark()
        return new

    def _apply_state(self, leader: int, state: PartitionState, replicas: tuple[int, ...]
                     ) -> None:
        """Take the leader, epoch, replicas, ISR and versions of a partition state; an ISR
        write still in flight is forgotten (the state supersedes it)."""
        self.leader = leader
        self.leader_epoch = state.leader_epoch
        self.replicas = replicas
        self.isr = state.isr
        self.state_version = state.version
        self.controller_epoch = state.controller_epoch
        self.pending_isr = None

    def make_follower(self, state: PartitionState, replicas: tuple[int, ...]) -> bool:
        """Apply a state naming another broker (or none) leader; True if the leader or
        epoch changed, so the follower must check for a divergent tail and refetch."""
        changed = self.leader != state.leader or self.leader_epoch != state.leader_epoch
        if changed:
            log.info("%s: follower of %d at epoch %d", self, state.leader, state.leader_epoch)
        self._apply_state(state.leader, state, replicas)
        self.followers = {}
        return changed

    def check_leader(self, client_epoch: int = -1) -> None:
        if not self.is_leader:
            raise NotLeaderOrFollower(
                f"Broker {self.broker_id} is not the leader of {self.topic}-{self.index}")
        if client_epoch >= 0 and client_epoch != self.leader_epoch:
            from strom.protocol.errors import FencedLeaderEpoch
            if client_epoch < self.leader_epoch:
                raise FencedLeaderEpoch(f"Epoch {client_epoch} is older than "
                                        f"{self.leader_epoch}")
            raise UnknownLeaderEpoch(f"Epoch {client_epoch} is newer than {self.leader_epoch}")

    # --- leader: appends and followers ------------------------------------------------------
    def append_as_leader(self, batch: bytearray, header: BatchHeader, acks: int
                         ) -> AppendResult:
        self.check_leader()
        min_isr = self.log.config.get("min.insync.replicas")
        if acks == -1 and len(self.isr) < min_isr:
            raise NotEnoughReplicas(
                f"The size of the current ISR {list(self.isr)} is insufficient to satisfy "
                f"the min.isr requirement of {min_isr} for partition {self.topic}-{self.index}")
        result = self.log.append_as_leader(batch, header, self.leader_epoch)
        self.maybe_increment_high_watermark()
        return result

    def append_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                      commit: bool) -> AppendResult:
        """A COMMIT/ABORT marker as leader (WriteTxnMarkers), held to min.insync.replicas
        like an acks=all Produce."""
        self.check_leader()
        min_isr = self.log.config.get("min.insync.replicas")
        if len(self.isr) < min_isr:
            raise NotEnoughReplicas(
                f"The size of the current ISR {list(self.isr)} is insufficient to satisfy "
                f"the min.isr requirement of {min_isr} for partition {self.topic}-{self.index}")
        result = self.log.append_marker(producer_id, producer_epoch, coordinator_epoch,
                                        commit, self.leader_epoch)
        self.maybe_increment_high_watermark()
        return result

    def check_follower(self, replica_id: int, client_epoch: int = -1) -> None:
        """A fetch with `replica_id` comes from one of this partition's followers; else, as
        Kafka, UNKNOWN_LEADER_EPOCH when the request named the current epoch (the replica
        may not be known here yet), NOT_LEADER_OR_FOLLOWER when it named none."""
        if replica_id in self.followers:
            return
        message = (f"Broker {replica_id} is not a follower of {self} (replicas "
                   f"{list(self.replicas)}, leader epoch {self.leader_epoch})")
        if client_epoch >= 0:
            raise UnknownLeaderEpoch(message)
        raise NotLeaderOrFollower(message)

    def update_follower(self, replica_id: int, fetch_offset: int, now_ms: int,
                        log_start_offset: int = -1) -> bool:
        """A follower fetched at `fetch_offset` (so it has everything below it). Returns
        True if the high watermark moved.

        An offset outside [log start offset, log end offset] changes nothing: as in Kafka,
        the fetch is answered OFFSET_OUT_OF_RANGE and only a valid read updates the
        follower's state, so a follower (or a client using its id) cannot claim offsets
        the leader does not have and move the high watermark or join the ISR with them."""
        f = self.followers.get(replica_id)
        if f is None:
            return False
        leo = self.log.log_end_offset
        if not self.log.log_start_offset <= fetch_offset <= leo:
            return False
        # caught up: it asked for the end of the log, or for the end of the log as it was
        # at its previous fetch (then it was caught up at that time)
        if fetch_offset >= leo:
            f.last_caught_up_ms = now_ms
        elif fetch_offset >= f.last_fetch_leader_end_offset >= 0:
            f.last_caught_up_ms = max(f.last_caught_up_ms, f.last_fetch_ms)
        f.log_end_offset = fetch_offset
        f.log_start_offset = log_start_offset
        f.last_fetch_leader_end_offset = leo
        f.last_fetch_ms = now_ms
        return self.maybe_increment_high_watermark()

    def isr_to_expand(self, live: set[int] | dict) -> tuple[int, ...] | None:
        """The ISR with the followers that caught up added, or None if none did. A follower
        rejoins once it has everything up to the high watermark and has fetched within the
        current leader epoch (its log end offset is past the epoch's start), and only while
        it is a registered (`live`) broker: one in controlled shutdown stays out."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        epoch_start = self.log.leader_epochs[-1][1] if self.log.leader_epochs else 0
        joining = [b for b, f in self.followers.items() if b not in self.isr and b in live
                   and b in self.replicas and f.log_end_offset >= self.high_watermark
                   and f.log_end_offset >= epoch_start]
        return self.isr + tuple(sorted(joining)) if joining else None

    def isr_to_shrink(self, now_ms: int, max_lag_ms: int) -> tuple[int, ...] | None:
        """The ISR without followers that have not caught up for `max_lag_ms`."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        out = [b for b in self.isr if b != self.broker_id and b in self.followers
               and now_ms - self.followers[b].last_caught_up_ms > max_lag_ms]
        if not out:
            return None
        return tuple(b for b in self.isr if b not in out)

    def isr_written(self, isr: tuple[int, ...], version: int) -> bool:
        """Our ISR change landed in the store; True if the high watermark moved."""
        self.isr = isr
        self.state_version = version
        self.pending_isr = None
        return self.maybe_increment_high_watermark()

    def maybe_increment_high_watermark(self) -> bool:
        """Move the high watermark to the smallest log end offset in the ISR."""
        if not self.is_leader:
            return False
        leo = self.log.log_end_offset
        new_hw = leo
        for b in self.isr:
            if b != self.broker_id:
                f = self.followers.get(b)
                new_hw = min(new_hw, f.log_end_offset if f else leo)
        if new_hw > self.log.high_watermark:
            self.log.high_watermark = new_hw
            return True
        return False

    # --- DeleteRecords ----------------------------------------------------------------------
    def delete_records(self, offset: int) -> int:
        """Move the log start offset to `offset` (-1: the high watermark) as leader;
        returns the offset asked for. As Kafka's deleteRecordsOnLeader: POLICY_VIOLATION
        when cleanup.policy has no `delete`, OFFSET_OUT_OF_RANGE for a negative offset or
        one past the high watermark."""
        self.check_leader()
        if "delete" not in self.log.config.get("cleanup.policy"):
            raise PolicyViolation(f"Records of partition {self} can not be deleted due to "
                                  f"the configured policy")
        target = self.high_watermark if offset == -1 else offset
        if target < 0:
            raise OffsetOutOfRange(f"The offset {target} for partition {self} is not valid")
        self.log.maybe_increment_log_start_offset(target)
        return target

    def low_watermark(self, live: set[int] | dict) -> int:
        """The smallest log start offset over this leader and its followers on live
        brokers (Kafka's lowWatermarkIfLeader): DeleteRecords completes once it reaches
        the offset asked for."""
        self.check_leader()
        low = self.log.log_start_offset
        for b, f in self.followers.items():
            if b in live:
                low = min(low, f.log_start_offset)
        return low

    # --- follower ---------------------------------------------------------------------------
    def update_follower_high_watermark(self, leader_high_watermark: int) -> None:
        hw = min(leader_high_watermark, self.log.log_end_offset)
        if hw > self.log.high_watermark:
            self.log.high_watermark = hw

    def update_follower_log_start_offset(self, leader_log_start_offset: int) -> bool:
        """Follow the leader's log start offset (moved by DeleteRecords or retention), as
        Kafka's fetcher does; bounded by our own high watermark. True if it moved."""
        return self.log.maybe_increment_log_start_offset(
            min(leader_log_start_offset, self.log.high_watermark))
