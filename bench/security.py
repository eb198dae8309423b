#!/usr/bin/env python3
"""What TLS and SASL cost: produce and consume throughput, and the broker's CPU per MB, over
PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-256) side by side, against one strom broker that has
all three listeners (strom.testing.security; certificates from a throw-away test CA).

Each round, for each listener in turn: confluent-kafka produces --messages records of
--size bytes (acks=1, lz4 off) to a fresh one-partition topic, then a consumer reads them all
back (assigned, no group). Broker CPU is read from /proc/<pid>/stat before and after. The
listeners alternate within a round, --repeat rounds; medians at the end. Over TLS the broker
cannot sendfile: consume shows that cost. Only 127.0.0.1 is contacted; every wait is bounded.

Example:  python bench/security.py --messages 200000 --size 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from strom.testing.broker import BrokerProcess  # noqa: E402
from strom.testing.security import SecureListeners  # noqa: E402

CASES = (("PLAINTEXT", None), ("SSL", None), ("SASL_SSL", "SCRAM-SHA-256"))
USER, PASSWORD = "bench", "bench-secret"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(conf: dict, topic: str, messages: int, size: int, timeout_s: float) -> None:
    producer = Producer({**conf, "acks": 1, "linger.ms": 5, "batch.size": 1 << 20,
                         "queue.buffering.max.messages": 1_000_000,
                         "message.timeout.ms": int(timeout_s * 1000)})
    value = os.urandom(size)
    for _ in range(messages):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(timeout_s):
        raise RuntimeError("produce did not finish in time")


def consume(conf: dict, topic: str, messages: int, timeout_s: float) -> None:
    consumer = Consumer({**conf, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 50 << 20})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, deadline = 0, time.monotonic() + timeout_s
    try:
        while got < messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumed {got} of {messages} in {timeout_s:.0f} s")
            for m in consumer.consume(10000, 0.5):
                if not m.error():
                    got += 1
    finally:
        consumer.close()


def run_case(listeners: SecureListeners, pid: int, listener: str, mechanism: str | None,
             messages: int, size: int, timeout_s: float) -> dict:
    conf = listeners.confluent(listener, mechanism, USER, PASSWORD)
    topic = f"bench-{listener.lower()}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    mb = messages * size / 1e6
    out = {"listener": listener}
    for phase, work in (("produce", lambda: produce(conf, topic, messages, size, timeout_s)),
                        ("consume", lambda: consume(conf, topic, messages, timeout_s))):
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        work()
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
        out[f"{phase}_mb_s"] = mb / wall
        out[f"{phase}_cpu_ms_per_mb"] = cpu * 1000 / mb
    admin.delete_topics([topic])[topic].result(timeout=30)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1000, help="record value bytes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per phase")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="strom-bench-security-"))
    listeners = SecureListeners.make(work / "certs")
    broker = BrokerProcess(log_dir=work / "data", overrides=listeners.overrides(),
                           port=listeners.plaintext)
    broker.start()
    rows: dict[str, list[dict]] = {name: [] for name, _ in CASES}
    try:
        subprocess.run([sys.executable, "-m", "strom", "configs", "--bootstrap-server",
                        broker.bootstrap, "--alter", "--entity-type", "users", "--entity-name",
                        USER, "--add-config", f"SCRAM-SHA-256=[password={PASSWORD}]"],
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        for rep in range(args.repeat):
            for listener, mechanism in CASES:
                r = run_case(listeners, broker.pid, listener, mechanism, args.messages,
                             args.size, args.timeout_s)
                rows[listener].append(r)
                print(f"r{rep} {listener:10} produce {r['produce_mb_s']:7.1f} MB/s "
                      f"({r['produce_cpu_ms_per_mb']:5.1f} ms CPU/MB)  consume "
                      f"{r['consume_mb_s']:7.1f} MB/s ({r['consume_cpu_ms_per_mb']:5.1f} ms "
                      "CPU/MB)", flush=True)
    finally:
        broker.close()
    keys = ("produce_mb_s", "produce_cpu_ms_per_mb", "consume_mb_s", "consume_cpu_ms_per_mb")
    print(f"\nmedians of {args.repeat} ({args.messages} x {args.size} B), broker CPU per MB:")
    print("| listener | produce MB/s | produce CPU ms/MB | consume MB/s | consume CPU ms/MB |")
    print("|---|---|---|---|---|")
    for listener, runs in rows.items():
        if runs:
            cells = " | ".join(f"{statistics.median(r[k] for r in runs):.1f}" for k in keys)
            print(f"| {listener} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
