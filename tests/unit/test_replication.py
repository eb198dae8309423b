"""Leader-side replication state (strom.replication.partition.Partition) and the follower's
divergence truncation (ReplicaFetcher._truncate_to_leader), without sockets."""

from __future__ import annotations

import uuid

from strom.cluster.model import PartitionState
from strom.replication.fetcher import FetchTarget, ReplicaFetcher
from strom.replication.partition import Partition
from tests.unit.test_partition_log import append, open_log

NOW = 1_700_000_000_000


def leader(tmp_path, isr=(1, 2, 3), epoch=5, **overrides) -> Partition:
    p = Partition("t", 0, uuid.uuid4(), open_log(tmp_path, **overrides), broker_id=1)
    p.make_leader(PartitionState(1, epoch, tuple(isr), 1, 0), (1, 2, 3), NOW)
    return p


def test_new_leader_records_where_its_epoch_starts(tmp_path):
    plog = open_log(tmp_path)
    for _ in range(3):
        append(plog, epoch=2)
    p = Partition("t", 0, uuid.uuid4(), plog, broker_id=1)
    assert p.make_leader(PartitionState(1, 4, (1, 2), 1, 0), (1, 2), NOW)
    assert plog.leader_epochs[-1] == (4, 3)
    # same epoch again (an ISR change): not a new leadership, follower state is kept
    p.update_follower(2, 3, NOW)
    assert not p.make_leader(PartitionState(1, 4, (1,), 1, 1), (1, 2), NOW)
    assert p.followers[2].log_end_offset == 3 and p.isr == (1,)


def test_a_state_older_than_the_leaders_own_isr_write_is_not_applied(tmp_path):
    # A metadata refresh that read the state before the leader's ISR write landed ends
    # after it: applying it brought the old ISR and version back, and every ISR write after
    # it failed on the stale version (BadVersionError) until the next refresh.
    p = leader(tmp_path, isr=(1, 2), epoch=4)
    p.update_follower(3, 0, NOW)
    assert p.isr_to_expand({1: None, 2: None, 3: None}) == (1, 2, 3)
    p.pending_isr = (1, 2, 3)
    p.isr_written((1, 2, 3), 1)
    assert not p.make_leader(PartitionState(1, 4, (1, 2), 1, 0), (1, 2, 3), NOW)
    assert (p.isr, p.state_version) == ((1, 2, 3), 1)
    assert p.isr_to_expand({1: None, 2: None, 3: None}) is None
    # a newer version (the controller took 3 out) and a new epoch apply as before
    assert not p.make_leader(PartitionState(1, 4, (1, 2), 1, 2), (1, 2, 3), NOW)
    assert (p.isr, p.state_version) == ((1, 2), 2)
    assert p.make_leader(PartitionState(1, 5, (1,), 1, 0), (1, 2, 3), NOW)
    assert (p.isr, p.leader_epoch, p.state_version) == ((1,), 5, 0)


def test_high_watermark_is_the_minimum_over_the_isr(tmp_path):
    p = leader(tmp_path)
    for _ in range(4):
        p.append_as_leader(*_batch(), acks=-1)
    assert p.high_watermark == 0  # followers have nothing yet
    assert not p.update_follower(2, 4, NOW)  # follower 3 has nothing yet
    assert p.high_watermark == 0
    assert p.update_follower(3, 2, NOW)
    assert p.high_watermark == 2
    assert p.update_follower(3, 4, NOW)
    assert p.high_watermark == 4
    assert not p.update_follower(9, 4, NOW)  # not a replica: ignored


def test_follower_out_of_sync_for_the_lag_time_leaves_the_isr(tmp_path):
    p = leader(tmp_path)
    p.append_as_leader(*_batch(), acks=1)
    p.update_follower(2, 1, NOW)  # caught up
    p.update_follower(3, 0, NOW)  # behind
    assert p.isr_to_shrink(NOW + 10_000, 10_000) is None
    p.update_follower(2, 1, NOW + 10_000)  # still fetching at the end of the log
    assert p.isr_to_shrink(NOW + 10_001, 10_000) == (1, 2)
    p.pending_isr = (1, 2)
    assert p.isr_to_shrink(NOW + 20_000, 10_000) is None  # one change at a time
    assert p.isr_written((1, 2), 1)  # without the lagging follower the HW moves up
    assert p.high_watermark == 1
    assert p.isr == (1, 2) and p.state_version == 1


def test_follower_that_caught_up_as_of_its_previous_fetch_stays_in_sync(tmp_path):
    p = leader(tmp_path)
    p.append_as_leader(*_batch(), acks=1)
    p.update_follower(2, 1, NOW)
    p.append_as_leader(*_batch(), acks=1)  # leader end offset 2
    p.update_follower(2, 1, NOW + 5_000)  # asked at the end as of its last fetch
    p.update_follower(2, 2, NOW + 9_000)  # caught up again
    assert p.followers[2].last_caught_up_ms == NOW + 9_000


def test_caught_up_follower_rejoins_the_isr(tmp_path):
    p = leader(tmp_path, isr=(1, 2))
    p.append_as_leader(*_batch(), acks=1)
    p.update_follower(2, 1, NOW)
    assert p.high_watermark == 1
    p.update_follower(3, 0, NOW)
    assert p.isr_to_expand({1, 2, 3}) is None  # below the high watermark
    p.update_follower(3, 1, NOW)
    assert p.isr_to_expand({1, 2}) is None  # 3 is not registered
    assert p.isr_to_expand({1, 2, 3}) == (1, 2, 3)


def test_min_insync_replicas_is_checked_for_acks_all_only(tmp_path):
    p = leader(tmp_path, isr=(1,), min_insync_replicas=2)
    p.append_as_leader(*_batch(), acks=1)
    try:
        p.append_as_leader(*_batch(), acks=-1)
    except Exception as e:  # noqa: BLE001
        assert e.code == 19  # NOT_ENOUGH_REPLICAS
    else:
        raise AssertionError("acks=all with ISR < min.insync.replicas was accepted")


def _batch():
    from strom.log.records import NewRecord, build_batch
    from strom.protocol.batch import read_header

    data = bytearray(build_batch([NewRecord(b"v", key=b"k", timestamp=NOW)]))
    return data, read_header(data)


# --- follower truncation (KIP-101 / KIP-279) ----------------------------------------------
def follower_with_epochs(tmp_path, epochs) -> FetchTarget:
    """A follower log with one batch per entry of `epochs` (offsets 0..n-1)."""
    plog = open_log(tmp_path)
    for e in epochs:
        append(plog, epoch=e)
    p = Partition("t", 0, uuid.uuid4(), plog, broker_id=2)
    p.make_follower(PartitionState(1, 9, (1, 2), 1, 0), (1, 2))
    return FetchTarget(p, 9)


def test_truncates_to_the_leaders_end_of_our_latest_epoch(tmp_path):
    t = follower_with_epochs(tmp_path, [0, 0, 3, 3, 3])
    ReplicaFetcher._truncate_to_leader(t, 3, 3, 4)  # the leader's epoch 3 ended at 4
    assert t.partition.log.log_end_offset == 4 and not t.needs_truncation


def test_leader_without_our_epoch_truncates_to_the_end_of_the_common_one(tmp_path):
    # we led epoch 3 (offsets 2-4) that never reached the new leader; it has epoch 0 up to
    # offset 3 and then its own epoch
    t = follower_with_epochs(tmp_path, [0, 0, 3, 3, 3])
    ReplicaFetcher._truncate_to_leader(t, 3, 0, 3)
    assert t.partition.log.log_end_offset == 2  # our epoch 0 ends at 2
    assert t.partition.log.leader_epochs == [(0, 0)]


def test_no_epoch_answer_truncates_to_the_high_watermark(tmp_path):
    t = follower_with_epochs(tmp_path, [0, 0, 0])
    t.partition.log.high_watermark = 1
    ReplicaFetcher._truncate_to_leader(t, 0, -1, -1)
    assert t.partition.log.log_end_offset == 1


def test_nothing_truncated_when_the_leader_has_more(tmp_path):
    t = follower_with_epochs(tmp_path, [0, 0])
    ReplicaFetcher._truncate_to_leader(t, 0, 0, 10)
    assert t.partition.log.log_end_offset == 2
