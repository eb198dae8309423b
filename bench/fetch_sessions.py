#!/usr/bin/env python3
"""What an idle follower's fetches cost on the wire, with and without KIP-227 fetch sessions.

A 2-broker strom cluster on ZooKeeper; broker 1 leads every partition of a `--partitions`
topic (RF 2), broker 2 follows them all. A FetchProxy (strom.testing.fetch_proxy) in front
of the leader records each Fetch the follower sends. After one record per partition has
been replicated and `--settle-s` have passed, the follower's fetches over `--observe-s`
are counted: requests per second, mean request and response bytes (whole frames).

    sessions     the default max.incremental.fetch.session.cache.slots (1000): the follower
                 opens a session and its idle fetches carry no partition
    no-sessions  max.incremental.fetch.session.cache.slots=0 on the leader: no session can
                 be opened, so every fetch is a full one naming every partition

Only 127.0.0.1 is used; the brokers and ZooKeeper are stopped by PID at the end.

    python bench/fetch_sessions.py [--partitions 500] [--observe-s 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from strom.testing.cluster import Cluster, wait_until
from strom.testing.fetch_proxy import FetchProxy
from strom.testing.zookeeper import ZooKeeperProcess

TOPIC = "fetch-sessions-bench"
LEADER, FOLLOWER = 1, 2
FETCHER = f"strom-replica-fetcher-{FOLLOWER}"


def run(zk: ZooKeeperProcess, mode: str, args: argparse.Namespace) -> dict:
    overrides = {"replica.fetch.wait.max.ms": args.wait_ms}
    if mode == "no-sessions":
        overrides["max.incremental.fetch.session.cache.slots"] = 0
    cluster = Cluster(zk.connect_string, 2, overrides)
    leader = cluster.brokers[LEADER]
    with FetchProxy(leader.port) as proxy:
        leader.overrides["advertised.listeners"] = f"PLAINTEXT://{proxy.address}"
        try:
            cluster.start()
            # many partitions: longer than create_topic's client allows on a busy machine
            new = NewTopic(TOPIC, args.partitions, -1,
                           replica_assignment=[[LEADER, FOLLOWER]] * args.partitions)
            admin = AdminClient({"bootstrap.servers": cluster.bootstrap,
                                 "socket.timeout.ms": 120000})
            admin.create_topics([new], request_timeout=120,
                                operation_timeout=120)[TOPIC].result(timeout=130)
            wait_until(lambda: set(cluster.isr_of(TOPIC, args.partitions - 1)) ==
                       {LEADER, FOLLOWER}, 120, what="the topic created")
            producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
            for p in range(args.partitions):
                producer.produce(TOPIC, b"x", partition=p)
            assert producer.flush(60) == 0
            wait_until(lambda: cluster.high_watermark(TOPIC, args.partitions - 1) == 1, 60,
                       what="the last partition replicated")
            time.sleep(args.settle_s)
            start = len(proxy.exchanges(FETCHER))
            began = time.monotonic()
            time.sleep(args.observe_s)
            window = [x for x in proxy.exchanges(FETCHER)[start:] if x.response_bytes >= 0]
            elapsed = time.monotonic() - began
        finally:
            cluster.close()
    if not window:
        raise RuntimeError(f"{mode}: no follower fetch seen in {args.observe_s} s")
    return {"mode": mode, "fetches": len(window), "per_s": len(window) / elapsed,
            "request_bytes": statistics.mean(x.request_bytes for x in window),
            "response_bytes": statistics.mean(x.response_bytes for x in window),
            "incremental": sum(x.session_epoch > 0 for x in window)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=500)
    ap.add_argument("--observe-s", type=float, default=10.0)
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--wait-ms", type=int, default=500, help="replica.fetch.wait.max.ms")
    args = ap.parse_args()
    print(f"idle follower of {args.partitions} partitions, replica.fetch.wait.max.ms="
          f"{args.wait_ms}, observed {args.observe_s:.0f} s")
    print(f"{'mode':12} {'fetches':>7} {'per s':>6} {'incremental':>11} {'request B':>10} "
          f"{'response B':>10} {'B/s both ways':>13}")
    with ZooKeeperProcess() as zk:
        for mode in ("sessions", "no-sessions"):
            r = run(zk, mode, args)
            print(f"{r['mode']:12} {r['fetches']:7d} {r['per_s']:6.1f} {r['incremental']:11d} "
                  f"{r['request_bytes']:10.0f} {r['response_bytes']:10.0f} "
                  f"{r['per_s'] * (r['request_bytes'] + r['response_bytes']):13.0f}")


if __name__ == "__main__":
    main()
