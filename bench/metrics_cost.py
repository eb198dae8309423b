#!/usr/bin/env python3
"""Broker CPU of a produce and a consume run with metrics off and on, side by side.

Each round starts a fresh broker without `metrics.listener`, then one with it (scraped
every `--scrape-interval` seconds during the run, more often than Prometheus' usual 15-30
s), and in each produces `--records` records of 100 bytes with confluent-kafka (acks=1)
and then reads them back. The figure is the broker process's CPU time (user + system, from
/proc/<pid>/stat) per record for each phase; the ratio on/off is printed at the end.
CPU time, not wall time: the machine's other load hardly moves it. Rounds alternate off
and on, so a slow minute falls on both.

    python bench/metrics_cost.py [--records 200000] [--rounds 3] [--scrape-interval 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

from strom.testing.broker import BrokerProcess
from strom.testing.kafka import create_topic
from strom.testing.processes import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def scrape_until(port: int, interval: float, stop: threading.Event, counts: list) -> None:
    while not stop.wait(interval):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            r.read()
        counts[0] += 1


def one_run(records: int, metrics: bool, interval: float) -> tuple[float, float, int]:
    """CPU microseconds per record for (produce, consume), and the scrapes made."""
    overrides = {"metrics.listener": f"http://127.0.0.1:{free_port()}"} if metrics else {}
    broker = BrokerProcess(overrides=overrides, startup_timeout=60)
    broker.start()
    stop, scrapes = threading.Event(), [0]
    try:
        topic = create_topic(broker.bootstrap, "cost", partitions=1)
        if metrics:
            threading.Thread(target=scrape_until, daemon=True,
                             args=(broker.metrics_port, interval, stop, scrapes)).start()
        value = b"v" * 100
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": 1,
                             "linger.ms": 5, "queue.buffering.max.messages": 1000000})
        before = cpu_seconds(broker.pid)
        for _ in range(records):
            while True:
                try:
                    producer.produce(topic, value)
                    break
                except BufferError:
                    producer.poll(0.01)
        assert producer.flush(120) == 0, "records not delivered"
        produced = cpu_seconds(broker.pid)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cost",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        consumer.assign([TopicPartition(topic, 0, 0)])
        read = 0
        while read < records:
            for msg in consumer.consume(10000, timeout=10):
                if msg.error() is None:
                    read += 1
        consumer.close()
        consumed = cpu_seconds(broker.pid)
        return ((produced - before) / records * 1e6, (consumed - produced) / records * 1e6,
                scrapes[0])
    finally:
        stop.set()
        broker.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    args = ap.parse_args()
    runs: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for metrics in (False, True):
            runs[metrics].append(one_run(args.records, metrics, args.scrape_interval))
    med = {m: (statistics.median(r[0] for r in runs[m]), statistics.median(r[1] for r in runs[m]))
           for m in runs}
    for m, label in ((False, "metrics off"), (True, "metrics on ")):
        print(f"{label}: broker CPU per record: produce {med[m][0]:.2f} us, consume "
              f"{med[m][1]:.2f} us (runs: {[(round(p, 2), round(c, 2)) for p, c, _ in runs[m]]})")
    print(f"scrapes per 'on' run: {[s for _, _, s in runs[True]]}")
    print(f"on/off: produce {med[True][0] / med[False][0]:.3f}, "
          f"consume {med[True][1] / med[False][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
