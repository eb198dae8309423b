#!/usr/bin/env python3
"""Transactions against idempotence, side by side, on one strom broker it starts itself.

  produce   the same records written by a confluent-kafka producer three ways: idempotent
            (enable.idempotence; run first and again last, the faster run kept),
            transactional with --small records per transaction, and transactional with
            --large records per transaction; each to its own single-partition topic.
  consume   the topic written with --small records per transaction read to its end by a
            confluent-kafka consumer with isolation.level read_uncommitted and with
            read_committed, alternately, twice each, the faster run of each kept (every
            --abort-every'th transaction of it was aborted, after its records were sent,
            so the read_committed consumer gets the aborted-transaction lists and drops
            those records).

For each step: records/s (records read, for consume), and the broker's CPU seconds per
100k records (from /proc/<pid>/stat). The summary gives the ratios (transactional/idempotent and
read_committed/read_uncommitted). Loopback only; every step is bounded by --timeout, and
the broker is stopped by its PID.
Example:  python bench/transactions.py --records 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from strom.testing.broker import BrokerProcess  # noqa: E402
from strom.testing.kafka import create_topic  # noqa: E402

VALUE = b"x" * 100


def log(msg: str) -> None:
    print(f"[transactions {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(broker: BrokerProcess, name: str, records: int, fn) -> dict:
    cpu0, t0 = cpu_seconds(broker.pid), time.monotonic()
    extra = fn() or {}
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(broker.pid) - cpu0
    records = extra.get("records_read", records)
    row = {"step": name, "records": records, "seconds": round(elapsed, 3),
           "records_per_s": round(records / elapsed), "broker_cpu_s": round(cpu, 2),
           "broker_cpu_s_per_100k": round(cpu * 100_000 / records, 2), **extra}
    log(json.dumps(row))
    return row


def produce(bootstrap: str, topic: str, records: int, per_txn: int | None,
            abort_every: int, timeout: float) -> dict:
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
            "batch.num.messages": 10000}
    if per_txn:
        conf["transactional.id"] = f"bench-{topic}"
    p = Producer(conf)
    deadline = time.monotonic() + timeout
    aborted = 0
    if per_txn:
        p.init_transactions(30)
    sent = 0
    txn = 0
    while sent < records:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: {sent} of {records} records in {timeout}s")
        n = min(per_txn or 10_000, records - sent)
        if per_txn:
            p.begin_transaction()
        for _ in range(n):
            while True:
                try:
                    p.produce(topic, VALUE)
                    break
                except BufferError:
                    p.poll(0.01)
        sent += n
        if per_txn:
            txn += 1
            if abort_every and txn % abort_every == 0:
                p.flush(30)  # the records reach the log first, so the abort has work to do
                p.abort_transaction(30)
                aborted += n
            else:
                p.commit_transaction(30)
        else:
            p.poll(0)
    if p.flush(max(deadline - time.monotonic(), 1)):
        raise TimeoutError(f"{topic}: records still unsent")
    return {"transactions": txn, "aborted_records": aborted} if per_txn else {}


def consume(bootstrap: str, topic: str, isolation: str, expect: int | None,
            timeout: float) -> dict:
    """Read the partition to its end (the LSO for read_committed); `expect`: the count it
    must read (read_uncommitted reads what the aborted transactions had sent before their
    abort: librdkafka drops what it had not sent yet)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation, "fetch.max.bytes": 16 << 20})
    got = 0
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        if expect is not None and got != expect:
                            raise AssertionError(f"{isolation}: {got} records, want {expect}")
                        return {"records_read": got}
                    raise RuntimeError(m.error())
                got += 1
        raise TimeoutError(f"{isolation}: {got} records in {timeout}s")
    finally:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=100, help="records per small transaction")
    ap.add_argument("--large", type=int, default=10_000, help="records per large transaction")
    ap.add_argument("--abort-every", type=int, default=10,
                    help="abort every Nth small transaction (0: never)")
    ap.add_argument("--timeout", type=float, default=600.0, help="bound per step, seconds")
    args = ap.parse_args()
    broker = BrokerProcess(overrides={"transaction.state.log.replication.factor": 1,
                                      "transaction.state.log.min.isr": 1,
                                      "offsets.topic.replication.factor": 1})
    broker.start()
    rows = []
    try:
        bs = broker.bootstrap
        for t in ("idem", "idem-again", "txn-small", "txn-large"):
            create_topic(bs, f"bench-{t}", 1)
        # idempotent first and last (the first run also warms the broker up); the faster
        # is kept
        idem = [measured(broker, "produce idempotent", args.records, lambda: produce(
            bs, "bench-idem", args.records, None, 0, args.timeout))]
        small = measured(broker, f"produce transactional {args.small}/txn", args.records,
                         lambda: produce(bs, "bench-txn-small", args.records, args.small,
                                         args.abort_every, args.timeout))
        rows.append(small)
        rows.append(measured(broker, f"produce transactional {args.large}/txn", args.records,
                             lambda: produce(bs, "bench-txn-large", args.records, args.large,
                                             0, args.timeout)))
        idem.append(measured(broker, "produce idempotent", args.records, lambda: produce(
            bs, "bench-idem-again", args.records, None, 0, args.timeout)))
        rows.insert(0, max(idem, key=lambda r: r["records_per_s"]))
        committed = args.records - small["aborted_records"]
        # alternating, twice each (the first read warms the page cache); the faster run of
        # each isolation level is kept
        runs: dict[str, list[dict]] = {"read_uncommitted": [], "read_committed": []}
        for isolation in ("read_uncommitted", "read_committed", "read_committed",
                          "read_uncommitted"):
            want = committed if isolation == "read_committed" else None
            runs[isolation].append(measured(
                broker, f"consume {isolation}", committed,
                lambda isolation=isolation, want=want: consume(
                    bs, "bench-txn-small", isolation, want, args.timeout)))
        for done in runs.values():
            rows.append(max(done, key=lambda r: r["records_per_s"]))
    finally:
        broker.stop()
        broker.close()
    rate = {r["step"]: r["records_per_s"] for r in rows}
    cpu = {r["step"]: r["broker_cpu_s_per_100k"] for r in rows}
    idem = rows[0]["step"]
    summary = {"summary": True, "records": args.records}
    for r in rows[1:3]:
        summary[f"{r['step']} / idempotent: throughput"] = round(rate[r["step"]] / rate[idem], 3)
        summary[f"{r['step']} / idempotent: broker cpu"] = round(
            cpu[r["step"]] / cpu[idem], 3) if cpu[idem] else None
    summary["read_committed / read_uncommitted: throughput"] = round(
        rate["consume read_committed"] / rate["consume read_uncommitted"], 3)
    summary["read_committed / read_uncommitted: broker cpu"] = round(
        cpu["consume read_committed"] / cpu["consume read_uncommitted"], 3) \
        if cpu["consume read_uncommitted"] else None
    print("| step | records/s | broker CPU s per 100k records |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['records_per_s']} | {r['broker_cpu_s_per_100k']} |")
    print()
    for k, v in summary.items():
        if k not in ("summary", "records"):
            print(f"- {k}: {v}")
    print(json.dumps({"rows": rows, **summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
