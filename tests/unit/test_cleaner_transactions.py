"""The cleaner and transactions (strom.log.cleaned_transactions, cleaner.py): records of
aborted transactions go, markers go in a later round once their transaction's data is gone
and their delete horizon has passed, `.txnindex` entries go with the aborted data, an open
transaction is never cleaned past, producer state survives, and a crash mid-swap recovers."""

from __future__ import annotations

import glob
import os

import pytest

from strom.log import cleaner as cleaner_mod
from strom.log.cleaner_worker import CleanerWorker
from strom.log.records import Compression
from strom.log.transaction_index import AbortedTxn
from tests.unit.test_cleaner import DAY, NOW, Env, clean_until_crash

P1, P2, P5 = 1, 2, 5


class Txn:
    """A transactional producer writing to the env's log."""

    def __init__(self, env: Env, pid: int, epoch: int = 0) -> None:
        self.env, self.pid, self.epoch, self.seq = env, pid, epoch, 0

    def send(self, *records, compression=Compression.NONE, roll: bool = False) -> int:
        offset = self.env.append(*records, producer_id=self.pid, producer_epoch=self.epoch,
                                 base_sequence=self.seq, is_transactional=True,
                                 compression=compression)
        self.seq += len(records)
        if roll:
            self.env.plog.roll()
        return offset

    def end(self, commit: bool, roll: bool = False) -> int:
        offset = self.env.plog.append_marker(self.pid, self.epoch, 0, commit, 0).base_offset
        self.env.plog.high_watermark = self.env.plog.log_end_offset
        if roll:
            self.env.plog.roll()
        return offset


def data(env: Env) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of the data records (not the markers')."""
    return [(r.offset, r.key, r.value) for b in env.batches() if not b.header.is_control
            for r in b.records]


def control_batches(env: Env) -> list[tuple[int, int, int | None]]:
    """(offset, records, delete horizon) of each control batch."""
    return [(b.header.base_offset, len(b.records),
             b.header.delete_horizon_ms if b.header.has_delete_horizon else None)
            for b in env.batches() if b.header.is_control]


def aborted_entries(env: Env) -> list[AbortedTxn]:
    return env.plog.collect_aborted_txns(0, env.plog.log_end_offset)


def txnindex_files(env: Env) -> dict[str, bytes]:
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(env.plog.dir, "*.txnindex")))}


def history(env: Env) -> None:
    """Two producers, overlapping keys, one aborted transaction."""
    p1, p2 = Txn(env, P1), Txn(env, P2)
    p1.send((b"a", b"1"))                      # 0
    p2.send((b"a", b"X"), (b"c", b"X"))        # 1-2, aborted
    p1.end(commit=True)                        # 3
    p2.end(commit=False)                       # 4
    p1.send((b"a", b"2"))                      # 5
    p1.end(commit=True)                        # 6
    p2.send((b"d", b"1"))                      # 7
    p2.end(commit=True, roll=True)             # 8
    env.append((b"e", b"1"))                   # 9, the active segment


def test_aborted_records_go_at_once_and_markers_after_their_delete_horizon(tmp_path):
    env = Env(tmp_path, delete_retention_ms=DAY)
    history(env)
    assert aborted_entries(env) == [AbortedTxn(P2, 1, 4, 5)]
    assert env.manager.clean_once().end_offset == 9
    # the aborted a=X and c=X are gone though c has no other value; a=1 lost to a=2
    assert data(env) == [(5, b"a", b"2"), (7, b"d", b"1"), (9, b"e", b"1")]
    # round 1 dropped the data of the transactions ending at 3 and 4: their markers stay,
    # and so does the aborted transaction's index entry (for readers of the old segment)
    assert control_batches(env) == [(3, 1, None), (4, 1, None), (6, 1, None), (8, 1, None)]
    assert aborted_entries(env) == [AbortedTxn(P2, 1, 4, 5)]

    # round 2: no data of those transactions is left: their markers get a delete horizon,
    # the index entry goes (nothing left for read_committed to skip)
    env.clock.advance(1000)
    env.append((b"f", b"1"), roll=True)
    assert env.manager.clean_once() is not None
    horizon = NOW + 1000 + DAY
    assert control_batches(env) == [(3, 1, horizon), (4, 1, horizon), (6, 1, None),
                                    (8, 1, None)]
    assert aborted_entries(env) == [] and txnindex_files(env) == {}
    marker = next(b for b in env.batches() if b.header.base_offset == 3)
    assert marker.records[0].timestamp == NOW  # rebased on the horizon, unchanged

    # a round before the horizon keeps them; one after removes them
    env.clock.advance(DAY - 1)
    env.append((b"g", b"1"), roll=True)
    env.manager.clean_once()
    assert [c[0] for c in control_batches(env)] == [3, 4, 6, 8]
    env.clock.advance(1)
    env.append((b"h", b"1"), roll=True)
    env.manager.clean_once()
    assert control_batches(env) == [(6, 1, None), (8, 1, None)]
    assert data(env) == [(5, b"a", b"2"), (7, b"d", b"1"), (9, b"e", b"1"),
                             (10, b"f", b"1"), (11, b"g", b"1"), (12, b"h", b"1")]
    # the log loads with every transaction decided
    env.close()
    env.open()
    assert env.plog.producer_state.ongoing_txns() == []
    assert env.plog.last_stable_offset == env.plog.log_end_offset


def test_an_open_transaction_is_never_cleaned_past(tmp_path):
    env = Env(tmp_path)
    env.append((b"k", b"1"), roll=True)                 # 0
    p1 = Txn(env, P1)
    p1.send((b"k", b"open"), (b"j", b"open"), roll=True)  # 1-2: open
    env.append((b"k", b"3"), roll=True)                 # 3
    env.append((b"z", b"1"))                            # 4, active
    open_batch = env.batches()[1]
    assert env.plog.last_stable_offset == 1
    # the round stops at the segment holding the open transaction's first offset
    assert env.manager.clean_once().end_offset == 1
    assert env.manager.clean_once() is None
    assert env.batches()[1] == open_batch and data(env)[0] == (0, b"k", b"1")
    # aborted: the next round drops its records (its batch stays, empty: producer 1's
    # last), and k=3 wins
    p1.end(commit=False)                                # 5
    env.plog.roll()
    assert env.plog.last_stable_offset == env.plog.log_end_offset
    assert env.manager.clean_once() is not None
    assert data(env) == [(3, b"k", b"3"), (4, b"z", b"1")]
    empty = env.batches()[0].header
    assert (empty.base_offset, empty.last_offset, empty.producer_id, empty.records_count) \
        == (1, 2, P1, 0)


def test_a_producer_whose_only_batch_was_aborted_keeps_its_state(tmp_path):
    env = Env(tmp_path, delete_retention_ms=1000)  # well within producer.id.expiration.ms
    p5 = Txn(env, P5, epoch=3)
    p5.send((b"k", b"aborted"), (b"j", b"aborted"), compression=Compression.GZIP)  # 0-1
    p5.end(commit=False)                                                         # 2
    env.append((b"k", b"plain"), roll=True)                                      # 3
    env.append((b"z", b"1"))                                                     # 4
    for _ in range(3):  # rounds well past the delete horizon
        env.manager.clean_once()
        env.clock.advance(1000)
        env.append((b"z", b"2"), roll=True)
    first = env.batches()[0].header
    # the aborted batch stays as an empty header: offsets, epoch and sequence
    assert (first.base_offset, first.last_offset, first.producer_id, first.producer_epoch,
            first.base_sequence, first.records_count, first.compression) \
        == (0, 1, P5, 3, 0, 0, Compression.NONE)
    # ... so its transaction still has data: the marker and the index entry stay
    assert control_batches(env)[0][:2] == (2, 1)
    assert aborted_entries(env) == [AbortedTxn(P5, 0, 2, 3)]
    assert (0, b"k", b"aborted") not in data(env)
    # the producer's state comes back from the log alone (no snapshot), as in Kafka
    env.crash()
    for path in glob.glob(os.path.join(env.plog.dir, "*.snapshot")):
        os.unlink(path)
    env.open()
    entry = env.plog.producer_state.producers[P5]
    assert (entry.epoch, entry.last_seq) == (3, 1)
    assert env.plog.producer_state.ongoing_txns() == []


def test_a_marker_holding_its_producers_epoch_stays_as_an_empty_batch(tmp_path):
    """Transactions V2: the marker carries the bumped epoch, so the producer's state holds
    no data batch; its marker is what keeps the epoch (Kafka's isBatchLastRecordOfProducer,
    case 3): past its horizon it loses its record, not its header."""
    env = Env(tmp_path, delete_retention_ms=1000)
    Txn(env, P1, epoch=0).send((b"a", b"1"))                    # 0
    env.plog.append_marker(P1, 1, 0, True, 0)                   # 1, at epoch 1
    env.append((b"a", b"2"), roll=True)                         # 2
    env.append((b"z", b"1"))
    for _ in range(3):
        env.manager.clean_once()
        env.clock.advance(1000)
        env.append((b"z", b"2"), roll=True)
    marker = env.batches()[0].header
    assert (marker.base_offset, marker.is_control, marker.producer_id, marker.producer_epoch,
            marker.records_count) == (1, True, P1, 1, 0)
    assert data(env)[0] == (2, b"a", b"2")
    env.crash()
    for path in glob.glob(os.path.join(env.plog.dir, "*.snapshot")):
        os.unlink(path)
    env.open()
    assert env.plog.producer_state.producers[P1].epoch == 1


def test_empty_batches_go_once_their_producer_has_moved_on(tmp_path):
    env = Env(tmp_path, delete_retention_ms=1000)
    p5 = Txn(env, P5)
    p5.send((b"k", b"aborted"))                 # 0
    p5.end(commit=False)                        # 1
    env.append((b"z", b"1"), roll=True)         # 2
    env.append((b"z", b"2"))
    env.manager.clean_once()
    assert [(b.header.base_offset, len(b.records)) for b in env.batches()][:2] == \
        [(0, 0), (1, 1)]  # producer 5's state: its empty batch and so its marker stay
    p5.send((b"k", b"committed"))               # 4
    p5.end(commit=True, roll=True)              # 5
    env.append((b"y", b"1"))
    for _ in range(3):  # rounds past the ABORT marker's horizon
        env.manager.clean_once()
        env.clock.advance(1000)
        env.append((b"y", b"2"), roll=True)
    assert [c[0] for c in control_batches(env)] == [5]
    assert 0 not in [b.header.base_offset for b in env.batches()]
    assert aborted_entries(env) == []


def test_an_emptied_idempotent_batch_goes_once_its_producer_has_moved_on(tmp_path):
    env = Env(tmp_path)
    env.append((b"a", b"1"), producer_id=7, producer_epoch=0, base_sequence=0)  # 0
    env.append((b"a", b"2"), roll=True)                                         # 1
    env.append((b"z", b"1"))
    env.manager.clean_once()
    assert [(b.header.base_offset, len(b.records)) for b in env.batches()][0] == (0, 0)
    env.append((b"b", b"1"), producer_id=7, producer_epoch=0, base_sequence=1,
               roll=True)                                                       # 3
    env.append((b"z", b"2"))
    env.manager.clean_once()
    assert [b.header.base_offset for b in env.batches()] == [1, 2, 3, 4]


def test_aborted_batches_are_dropped_without_decoding_them(tmp_path, monkeypatch):
    env = Env(tmp_path)
    p1 = Txn(env, P1)
    p1.send((b"a", b"X"), (b"b", b"X"), compression=Compression.ZSTD)  # 0-1
    p1.end(commit=False)                                              # 2
    p1.send((b"a", b"1"))                                             # 3
    p1.end(commit=True, roll=True)                                    # 4
    env.append((b"z", b"1"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a compressed batch was decoded")

    monkeypatch.setattr(cleaner_mod, "decode_records", no_decoding)
    result = env.manager.clean_once()
    assert result is not None and result.stats.records_read >= 2
    monkeypatch.undo()
    assert data(env) == [(3, b"a", b"1"), (5, b"z", b"1")]
    assert [b.header.base_offset for b in env.batches()] == [2, 3, 4, 5]


def test_the_worker_process_cleans_transactions_as_in_place(tmp_path):
    here, there = Env(tmp_path / "here"), Env(tmp_path / "there")
    for env in (here, there):
        history(env)
    here.manager.clean_once()
    worker = CleanerWorker("test-cleaner-worker", there.manager.stop_event)
    try:
        assert there.manager.clean_once(worker) is not None
    finally:
        worker.close()
    assert data(there) == data(here) and control_batches(there) == control_batches(here)
    assert txnindex_files(there) == txnindex_files(here) != {}


CRASH_STEPS = ["cleaned", "swap.txnindex", "swap.log", "deleted.0", "final.txnindex",
               "final.log"]


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_crash_mid_swap_keeps_the_aborted_index_with_its_data(tmp_path, step,
                                                                monkeypatch):
    """kill -9 at a step of the swap of a segment whose .txnindex is rewritten: recovery
    gives the log and index from before the clean, or those of a finished one."""
    def build(env: Env) -> None:
        history(env)
        env.plog.roll()  # 9 (e=1) closed too: two segments, cleaned into one group

    env = Env(tmp_path / "crash")
    build(env)
    original = (data(env), aborted_entries(env))
    ref = Env(tmp_path / "reference")
    build(ref)
    ref.manager.clean_once()
    expected = (data(ref), aborted_entries(ref))
    assert expected[0] != original[0] and expected[1] == original[1]

    clean_until_crash(env, step, monkeypatch)
    env.plog.fsync()
    env.crash()
    env.open()
    done = CRASH_STEPS.index(step) >= CRASH_STEPS.index("swap.log")
    assert (data(env), aborted_entries(env)) == (expected if done else original)
    assert not [n for n in os.listdir(env.plog.dir)
                if n.endswith((".cleaned", ".swap", ".deleted"))]
    env.manager.clean_once()  # the checkpoint did not move: the round is done again
    assert data(env) == expected[0]
