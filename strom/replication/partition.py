"""Partition: one replica of a topic partition on this broker, and its replication state.

The leader appends produced batches, tracks each follower's log end offset, and moves the
high watermark to the minimum log end offset over the ISR. With one replica (the only one
until the cluster issue lands) the high watermark follows the log end offset directly.

    leader epoch   bumped by the controller at every leader change
    ISR            in-sync replicas; acks=all waits for all of them
    high watermark what consumers may read; never moves backwards on a leader

Owned by the ReplicaManager (event loop).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from strom.log.partition_log import AppendResult, PartitionLog
from strom.protocol.batch import BatchHeader
from strom.protocol.errors import ErrorCode, NotLeaderOrFollower, error

log = logging.getLogger(__name__)

NotEnoughReplicas = error(ErrorCode.not_enough_replicas)


@dataclass(slots=True)
class ReplicaState:
    broker_id: int
    log_end_offset: int = -1
    last_caught_up_ms: int = 0


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
        self.followers: dict[int, ReplicaState] = {}

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    def make_leader(self, leader_epoch: int, replicas: tuple[int, ...], isr: tuple[int, ...]
                    ) -> None:
        self.leader = self.broker_id
        self.leader_epoch = leader_epoch
        self.replicas = replicas
        self.isr = isr
        self.followers = {b: ReplicaState(b) for b in replicas if b != self.broker_id}
        self.maybe_increment_high_watermark()

    def make_follower(self, leader: int, leader_epoch: int, replicas: tuple[int, ...],
                      isr: tuple[int, ...]) -> None:
        self.leader = leader
        self.leader_epoch = leader_epoch
        self.replicas = replicas
        self.isr = isr
        self.followers = {}

    def check_leader(self, client_epoch: int = -1) -> None:
        if not self.is_leader:
            raise NotLeaderOrFollower(
                f"Broker {self.broker_id} is not the leader of {self.topic}-{self.index}")
        if client_epoch >= 0 and client_epoch != self.leader_epoch:
            from strom.protocol.errors import FencedLeaderEpoch, UnknownLeaderEpoch
            if client_epoch < self.leader_epoch:
                raise FencedLeaderEpoch(f"Epoch {client_epoch} is older than "
                                        f"{self.leader_epoch}")
            raise UnknownLeaderEpoch(f"Epoch {client_epoch} is newer than {self.leader_epoch}")

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
