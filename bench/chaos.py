#!/usr/bin/env python3
"""Random fault schedules against a strom cluster for minutes, then one verdict.

It starts everything it needs on 127.0.0.1: a three-member ZooKeeper ensemble (Debian's
package, strom.testing.zookeeper) and --brokers strom brokers (strom.testing.nemesis's
ChaosCluster: each broker behind its own ZooKeeper proxies and, when this machine lets us
mount, on a small tmpfs log dir). An idempotent acks=all producer (RF=3,
min.insync.replicas=2), a committing group consumer and (unless --no-transactions) a
transactional consume-transform-produce pipeline (strom.testing.chaos_txn) run throughout
while faults drawn from --seed (kill -9 / SIGSTOP of a broker, kill -9 of a ZooKeeper
member, a broker cut off from ZooKeeper, a broker nobody reaches, a link between two
brokers cut, the same one way only, one direction between a broker and ZooKeeper cut, a
full log dir) are injected one at a time, each held 2-8 s, healed, and the
cluster allowed to settle; faults stop after --minutes. strom.testing.chaos then reads
everything back and compares replicas. The last line is

    faults=F acknowledged=A lost=L duplicated=D divergent=V transactions=T txn_errors=E

(T: transactions whose commit was acknowledged; E: what the transactional checks found)
and the exit status is 1 when L, D, V or E (or any other check: unsent, reordered,
consumer offsets) is not 0. Every step goes to the --history file with the seed first, so a failing
run can be replayed with the same --seed. Each broker's log is copied beside it.

Example:  python bench/chaos.py --minutes 30 --seed 42 --history chaos-42.history
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

from strom.testing.chaos import run_schedule
from strom.testing.nemesis import FAULT_KINDS, ChaosCluster, schedule
from strom.testing.zookeeper import ZooKeeperEnsemble


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="inject faults this long")
    ap.add_argument("--seed", type=int, default=None, help="schedule seed (random if unset)")
    ap.add_argument("--brokers", type=int, default=3, help="3 to 5 brokers")
    ap.add_argument("--history", type=Path, default=None,
                    help="history file (default chaos-<seed>.history here)")
    ap.add_argument("--disk-mb", type=int, default=512,
                    help="size of each broker's tmpfs log dir (it holds the whole run)")
    ap.add_argument("--session-timeout-ms", type=int, default=4000,
                    help="brokers' zookeeper.session.timeout.ms")
    ap.add_argument("--no-transactions", action="store_true",
                    help="leave out the transactional consume-transform-produce workload")
    args = ap.parse_args(argv)
    if not 3 <= args.brokers <= 5:
        ap.error("--brokers must be 3 to 5")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    history = args.history or Path(f"chaos-{seed}.history")
    # more faults than fit in the time: the deadline ends the schedule
    faults = schedule(seed, max(len(FAULT_KINDS), int(args.minutes * 12)), FAULT_KINDS,
                      brokers=list(range(1, args.brokers + 1)), zk_members=[1, 2, 3])
    overrides = {"replica.fetch.backoff.ms": 200, "replica.lag.time.max.ms": 4000}
    with ZooKeeperEnsemble(3) as zk, ChaosCluster(
            zk, args.brokers, overrides, session_timeout_ms=args.session_timeout_ms,
            disk_bytes=args.disk_mb << 20) as chaos:
        try:
            verdict = run_schedule(chaos, faults, seed, history,
                                   until=time.monotonic() + args.minutes * 60,
                                   transactions=not args.no_transactions)
        finally:
            for n, b in chaos.cluster.brokers.items():
                if b.log_path.exists():
                    shutil.copy(b.log_path, history.with_name(f"{history.name}.broker-{n}.log"))
    print(verdict.summary())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
