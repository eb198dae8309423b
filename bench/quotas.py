#!/usr/bin/env python3
"""A producer held to its producer_byte_rate quota beside an unthrottled producer on the
same broker (both confluent-kafka), measured in one run.

Steps: start one strom broker; the unthrottled producer (client.id "free") produces alone
for --seconds (its baseline rate); `strom configs` sets producer_byte_rate=--quota for
client.id "limited"; then both produce at once for --seconds, each from its own thread.
A producer's rate is the bytes of values acknowledged within the measured time, divided by
it. Printed: the limited producer's rate against the quota (ratio), the throttle_time_ms it
saw (librdkafka's throttle_cb), and the free producer's rate beside it against its
baseline. The limited producer produces before the measure starts (--warmup seconds) so the
first burst the quota window allows is not counted. The free producer writes GBs to the broker's
temporary directory (retention.bytes is set, but deletion lags: expect a few GB of free
disk needed; the directory is removed at the end). Only 127.0.0.1 is contacted.

Example:  python bench/quotas.py --quota 1048576 --seconds 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer  # noqa: E402

from strom.testing.broker import BrokerProcess  # noqa: E402
from strom.testing.kafka import create_topic  # noqa: E402

VALUE = b"q" * 10_000


def produce(bootstrap: str, topic: str, client_id: str, start: float, end: float,
            result: dict) -> None:
    """Produce as fast as the client lets us until `end`; bytes acknowledged from `start`."""
    acked, throttles = [0], []
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": client_id,
                         "linger.ms": 5, "batch.size": 200_000, "acks": 1,
                         "throttle_cb": lambda e: throttles.append(e.throttle_time)})

    def delivered(err, _msg):
        if err is None and start <= time.monotonic() <= end:
            acked[0] += len(VALUE)
    while time.monotonic() < end:
        try:
            producer.produce(topic, VALUE, on_delivery=delivered)
        except BufferError:
            producer.poll(0.02)
            continue
        producer.poll(0)
    producer.flush(30)
    result.update(rate=acked[0] / (end - start), throttles=throttles)


def run(bootstrap: str, topic: str, clients: list[str], seconds: float, warmup: float
        ) -> dict[str, dict]:
    results: dict[str, dict] = {c: {} for c in clients}
    now = time.monotonic()
    start, end = now + warmup, now + warmup + seconds
    threads = [threading.Thread(target=produce, args=(bootstrap, topic, c, start, end,
                                                      results[c])) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + warmup + 60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quota", type=int, default=1 << 20, help="producer_byte_rate")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    # the free producer writes GBs: old segments are deleted (with some lag) to bound disk
    broker = BrokerProcess(overrides={"log.retention.check.interval.ms": 1000})
    broker.start()
    try:
        topic = create_topic(broker.bootstrap, "quota-bench", 1, config={
            "segment.bytes": str(64 << 20), "retention.bytes": str(128 << 20)})
        alone = run(broker.bootstrap, topic, ["free"], args.seconds, args.warmup)["free"]
        subprocess.run([sys.executable, "-m", "strom", "configs", "--bootstrap-server",
                        broker.bootstrap, "--alter", "--entity-type", "clients",
                        "--entity-name", "limited", "--add-config",
                        f"producer_byte_rate={args.quota}"], check=True, timeout=60)
        both = run(broker.bootstrap, topic, ["limited", "free"], args.seconds, args.warmup)
    finally:
        broker.close()
    limited, free = both["limited"], both["free"]
    mb = 1 << 20
    throttles = limited["throttles"]
    print(f"quota producer_byte_rate={args.quota} B/s, measured over {args.seconds:.0f} s")
    print(f"limited producer: {limited['rate'] / mb:.3f} MiB/s, ratio to quota "
          f"{limited['rate'] / args.quota:.3f}; throttle_time_ms seen {len(throttles)} "
          f"times, max {max(throttles, default=0) * 1000:.0f} ms, "
          f"median {sorted(throttles)[len(throttles) // 2] * 1000 if throttles else 0:.0f} ms")
    print(f"free producer: {free['rate'] / mb:.1f} MiB/s beside it, {alone['rate'] / mb:.1f} "
          f"MiB/s alone (ratio {free['rate'] / alone['rate']:.2f}); throttled "
          f"{len(free['throttles'])} times")


if __name__ == "__main__":
    main()
