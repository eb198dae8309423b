"""The client side of a fetch session (KIP-227; Kafka's FetchSessionHandler), for a follower.

A fetcher keeps one session with its leader. Before each Fetch it hands `build()` the
partitions it wants now, each with its fetch position (`PartitionData`); the handler says
what to send:

- **full** (session epoch 0): every partition. With a session id, the broker closes that
  session first. The response's session_id is the new session (0: the broker had no room,
  and the next fetch is full again).
- **incremental** (the session's next epoch, 1, 2, ...): only the partitions added since the
  last request or whose `PartitionData` changed (a follower's fetch offset moves with every
  append), and, as forgotten, those no longer wanted (a leadership change, a partition in
  back-off). The broker still fetches every partition of the session, and answers only those
  with something new, so an idle follower of many partitions sends and receives a few bytes.

`handle_response()` moves the session on after an answer: the next epoch, or a full fetch
when the broker lost the session (FETCH_SESSION_ID_NOT_FOUND: a restart, an eviction),
refused the epoch (INVALID_FETCH_SESSION_EPOCH) or answered a partition the session does not
hold. `handle_error()` is for a request with no answer (a dropped connection): the next fetch
is full and closes the old session. The session partitions are updated when the request is
built, as Kafka's: a request is always followed by handle_response or handle_error.

Pure bookkeeping, owned by the fetcher's task (no IO, no locks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FETCH_SESSION_ID_NOT_FOUND = 70  # ErrorCode, kept as ints as on the broker side

TopicPartition = tuple[str, int]


def next_epoch(epoch: int) -> int:
    """The epoch after `epoch` (wrapping to 1, never back to 0, as Kafka's)."""
    return 1 if epoch == 0x7FFFFFFF else epoch + 1


@dataclass(frozen=True, slots=True)
class PartitionData:
    """What a fetch asks of one partition; a change of any field sends the partition again."""

    fetch_offset: int
    log_start_offset: int
    max_bytes: int
    current_leader_epoch: int
    last_fetched_epoch: int = -1


@dataclass(slots=True)
class FetchRequestData:
    """One Fetch to send: the session fields, the partitions to put in the request and the
    ones to forget. `session` is every partition the request fetches (what the response may
    answer)."""

    session_id: int
    epoch: int
    to_send: dict[TopicPartition, PartitionData]
    to_forget: list[TopicPartition]
    session: dict[TopicPartition, PartitionData]
    full: bool = field(default=False)


class FetchSessionHandler:
    def __init__(self) -> None:
        self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self.partitions: dict[TopicPartition, PartitionData] = {}
        # counts, for logs and tests
        self.full_fetches = 0
        self.incremental_fetches = 0
        self.resets = 0  # sessions lost or refused by the broker

    def build(self, wanted: dict[TopicPartition, PartitionData]) -> FetchRequestData:
        if self.epoch == INITIAL_EPOCH:
            self.partitions = dict(wanted)
            self.full_fetches += 1
            return FetchRequestData(self.session_id, INITIAL_EPOCH, dict(wanted), [],
                                    dict(wanted), full=True)
        to_send: dict[TopicPartition, PartitionData] = {}
        to_forget = [tp for tp in self.partitions if tp not in wanted]
        for tp in to_forget:
            del self.partitions[tp]
        for tp, data in wanted.items():
            if self.partitions.get(tp) != data:
                to_send[tp] = data
                self.partitions[tp] = data
        self.incremental_fetches += 1
        return FetchRequestData(self.session_id, self.epoch, to_send, to_forget,
                                dict(self.partitions))

    def handle_response(self, request: FetchRequestData, error_code: int, session_id: int,
                        answered: Iterable[TopicPartition]) -> bool:
        """Move the session on after the answer to `request`; False when the response is
        not to be used (a session error, or partitions the request did not fetch)."""
        if error_code:
            self.resets += 1
            if error_code == FETCH_SESSION_ID_NOT_FOUND:
                self.session_id = INVALID_SESSION_ID
            self.epoch = INITIAL_EPOCH  # a full fetch (closing the session, if any)
            return False
        if any(tp not in request.session for tp in answered):
            self.resets += 1
            self.epoch = INITIAL_EPOCH
            return False
        if session_id == INVALID_SESSION_ID:
            # no session: the cache had no room, or the broker closed it
            self.session_id, self.epoch = INVALID_SESSION_ID, INITIAL_EPOCH
        elif request.full:
            self.session_id, self.epoch = session_id, next_epoch(INITIAL_EPOCH)
        else:
            self.epoch = next_epoch(self.epoch)
        return True

    def handle_error(self) -> None:
        """The request got no answer: the next fetch is full, and closes the session."""
        self.epoch = INITIAL_EPOCH
