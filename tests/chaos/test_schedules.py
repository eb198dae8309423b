"""Seeded fault schedules against a three-broker cluster on a three-member ZooKeeper
ensemble, under an idempotent acks=all producer (RF=3, min.insync.replicas=2) and a
committing group consumer; strom.testing.chaos checks that nothing acknowledged is lost,
duplicated or reordered, that replicas agree byte for byte below the high watermark and
that consumers and committed offsets never go backwards.

The default run is one fixed schedule with one fault of every kind (kill -9 of a broker,
a SIGSTOP longer than the ZooKeeper session, kill -9 of a ZooKeeper member, a broker cut
off from ZooKeeper, a broker nobody reaches, a link between two brokers cut both ways or
one way only, one direction between a broker and ZooKeeper cut, a full log dir). `STROM_CHAOS_SEEDS=3,4,5` runs those seeds instead and
`STROM_CHAOS_FAULTS=N` makes each schedule N faults long. A failure prints the seed and
the history of the run.

The transactional consume-transform-produce workload (strom/testing/chaos_txn.py) runs only
with `STROM_CHAOS_TXN=1` (and in bench/chaos.py): seed 1 with it still fails about one run
in seven, mostly on librdkafka bugs (a consumer whose partitions never start after an
OffsetFetch answered NOT_COORDINATOR; send_offsets_to_transaction stalling), see
docs/reliability.md, "Open findings"; the NOT_COORDINATOR failure that first kept it out
is fixed ("Found by this suite and fixed").
"""

from __future__ import annotations

import os

import pytest

from strom.testing.chaos import run_schedule
from strom.testing.nemesis import FAULT_KINDS, schedule

SEEDS = [int(s) for s in os.environ.get("STROM_CHAOS_SEEDS", "1").split(",") if s.strip()]
FAULTS = int(os.environ.get("STROM_CHAOS_FAULTS", str(len(FAULT_KINDS))))
TRANSACTIONS = os.environ.get("STROM_CHAOS_TXN", "") == "1"

pytestmark = pytest.mark.timeout(240 + 60 * FAULTS)


@pytest.mark.parametrize("seed", SEEDS)
def test_schedule(seed, make_chaos, tmp_path):
    chaos = make_chaos(3)
    faults = schedule(seed, FAULTS, FAULT_KINDS, brokers=sorted(chaos.cluster.brokers),
                      zk_members=[1, 2, 3], min_s=2.0, max_s=6.0)
    history = tmp_path / f"chaos-{seed}.history"
    verdict = run_schedule(chaos, faults, seed, history, transactions=TRANSACTIONS)
    assert verdict.ok, f"seed {seed}:\n{verdict.details()}\nhistory:\n{history.read_text()}"
    assert verdict.acknowledged > 0
