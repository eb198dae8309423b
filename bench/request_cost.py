#!/usr/bin/env python3
"""CPU per request of the broker's request path, without sockets or clients.

A broker is started in this process (local metadata store, a temp log dir), and the
dispatcher is driven directly with the requests of bench/latency.py's scenario: a
one-record Produce (v9, acks=1, as librdkafka sends it) followed by a Fetch (v12) at the
log end, as a tailing consumer sends it. The figure is CPU microseconds per
produce-and-fetch round trip (time.process_time), which machine load hardly moves, so a
change to the request path can be measured on a busy machine. The socket writes and the
event loop's own work are not in it: bench/latency.py measures the whole.

    python bench/request_cost.py [--rounds 20000] [--repeat 5] [--metrics off|on|both]
                                 [--pace SECONDS] [--at-once] [--produce-partitions N]

`--metrics on` sets `metrics.listener` (the dispatcher then times every request); `both`
alternates runs without and with it and prints the ratio. `--pace 0.0005` sleeps before each
round trip and counts only the round trips' own CPU: what a request costs when it wakes an
idle process, as at 2,000 requests/s. `--at-once` takes the path the latency scenario's
requests take instead: a tailing consumer's Fetch v16 parked as it arrives
(`Dispatcher.fetch_at_once`), woken by a Produce answered as it arrives
(`Dispatcher.produce_at_once`). `--produce-partitions 3` measures a Produce alone that
carries three partitions (as kafka-python, aiokafka and the Java client group the batches
ready for one broker), through the full path: CPU microseconds per Produce.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import tempfile
import time

from strom.api.fast_path import ParkedFetch
from strom.cluster.controller import NewTopic
from strom.config import BrokerConfig
from strom.log.records import NewRecord, build_batch
from strom.protocol.messages import encode_request, make, request_module, request_schema
from strom.server.broker import Broker

TOPIC = "cost"


def produce_frame(correlation_id: int, partitions: int = 1) -> bytes:
    mod = request_module(0, 9)
    batch = build_batch([NewRecord(b"v" * 100, timestamp=int(time.time() * 1000))])
    req = make(request_schema(0, 9), transactional_id=None, acks=1,
               timeout=datetime.timedelta(seconds=30), topic_data=(make(
                   mod.TopicProduceData, name=TOPIC, partition_data=tuple(make(
                       mod.PartitionProduceData, index=i, records=batch)
                       for i in range(partitions))),))
    return encode_request(correlation_id, "rdkafka", req)[4:]


def fetch_frame(correlation_id: int, offset: int, topic_id=None) -> bytes:
    """A Fetch at `offset`: v12 with no wait (by topic name), or, given the topic's id,
    v16 with a 500 ms wait, as librdkafka's tailing consumer sends it."""
    version = 12 if topic_id is None else 16
    mod = request_module(1, version)
    topic = make(mod.FetchTopic, **({"topic": TOPIC} if topic_id is None else
                                    {"topic_id": topic_id}), partitions=(make(
        mod.FetchPartition, partition=0, current_leader_epoch=-1, fetch_offset=offset,
        last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1048576),))
    head = {"replica_id": -1} if version < 15 else {}
    req = make(request_schema(1, version), **head,
               max_wait=datetime.timedelta(milliseconds=0 if topic_id is None else 500),
               min_bytes=1, max_bytes=52428800, isolation_level=0, session_id=0,
               session_epoch=-1, rack_id="", forgotten_topics_data=(), topics=(topic,))
    return encode_request(correlation_id, "rdkafka", req)[4:]


async def measure(rounds: int, repeat: int, metrics: bool = False,
                  pace: float = 0.0, at_once: bool = False, produce_partitions: int = 0
                  ) -> list[float]:
    tmp = tempfile.mkdtemp(prefix="strom-request-cost-")
    settings = [f"log.dirs={tmp}", "listeners=PLAINTEXT://127.0.0.1:0"]
    if metrics:
        settings.append("metrics.listener=http://127.0.0.1:0")
    config = BrokerConfig.load(None, settings)
    broker = Broker(config)
    await broker.startup()
    try:
        await broker.controller.create_topic(NewTopic(TOPIC, max(produce_partitions, 1), 1))
        deadline = time.monotonic() + 10
        while len(broker.replicas.partitions) < max(produce_partitions, 1):
            if time.monotonic() > deadline:
                raise RuntimeError("the topic has no leader")
            await asyncio.sleep(0.01)
        dispatch = broker.dispatcher.dispatch
        frames = [produce_frame(i) for i in range(64)]  # a few distinct correlation ids
        results = []
        offset = 0

        async def round_trip(i: int, fetch: bytes) -> None:
            await dispatch(frames[i & 63], "127.0.0.1:1", "/127.0.0.1", "PLAINTEXT")
            await dispatch(fetch, "127.0.0.1:2", "/127.0.0.1", "PLAINTEXT")

        topic_id = None
        if produce_partitions:
            frames = [produce_frame(i, produce_partitions) for i in range(64)]

            async def round_trip(i: int, fetch: bytes) -> None:  # noqa: F811
                await dispatch(frames[i & 63], "127.0.0.1:1", "/127.0.0.1", "PLAINTEXT")
        elif at_once:
            dispatcher = broker.dispatcher
            answers = []
            topic_id = broker.cache.topic(TOPIC).topic_id
            # a client's first Produce of a partition takes the full path (it builds the
            # answer's template the fast path renders)
            await dispatch(frames[0], "127.0.0.1:1", "/127.0.0.1", "PLAINTEXT")
            offset = 1

            async def round_trip(i: int, fetch: bytes) -> None:  # noqa: F811
                # the tailing consumer's Fetch parks as it arrives; the Produce, answered
                # as it arrives, wakes it (its answer may need a turn of the loop)
                if not isinstance(dispatcher.fetch_at_once(fetch, answers.append),
                                  ParkedFetch):
                    raise RuntimeError("the Fetch was not parked: not the at-once path")
                if dispatcher.produce_at_once(frames[i & 63]) is None:
                    raise RuntimeError("the Produce was not answered at once")
                while not answers:
                    await asyncio.sleep(0)
                if answers.pop() is None:
                    raise RuntimeError("the parked Fetch failed")

        for _ in range(repeat):
            fetches = [fetch_frame(i, offset + i, topic_id) for i in range(rounds)]
            offset += rounds
            if pace:  # only the round trips' own CPU, each after `pace` seconds idle
                spent = 0.0
                for i in range(rounds):
                    await asyncio.sleep(pace)
                    t0 = time.thread_time()
                    await round_trip(i, fetches[i])
                    spent += time.thread_time() - t0
                results.append(spent / rounds * 1e6)
                continue
            t0 = time.process_time()
            for i in range(rounds):
                await round_trip(i, fetches[i])
            results.append((time.process_time() - t0) / rounds * 1e6)
        return results
    finally:
        await broker.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--metrics", choices=["off", "on", "both"], default="off")
    ap.add_argument("--at-once", action="store_true",
                    help="the latency scenario's path: a tailing Fetch v16 parked as it "
                         "arrives (Dispatcher.fetch_at_once), then woken by a Produce "
                         "answered as it arrives (Dispatcher.produce_at_once)")
    ap.add_argument("--pace", type=float, default=0.0, metavar="SECONDS",
                    help="sleep this long before each round trip and count only the round "
                         "trips' own CPU (thread time): the cost of a request that wakes "
                         "an idle process, as at a steady low rate")
    ap.add_argument("--produce-partitions", type=int, default=0, metavar="N",
                    help="measure a Produce of N partitions alone (full path), per Produce")
    args = ap.parse_args()
    what = f"Produce of {args.produce_partitions} partitions" if args.produce_partitions \
        else "produce+fetch round trip"
    if args.metrics != "both":
        results = asyncio.run(measure(args.rounds, args.repeat, args.metrics == "on",
                                      args.pace, args.at_once, args.produce_partitions))
        print(f"CPU per {what}: median {statistics.median(results):.1f} us "
              f"(runs: {', '.join(f'{r:.1f}' for r in results)})")
        return 0
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):  # alternated, so machine load falls on both alike
        for metrics in (False, True):
            runs[metrics] += asyncio.run(measure(args.rounds, 1, metrics, args.pace,
                                                 args.at_once, args.produce_partitions))
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    for metrics, label in ((False, "metrics off"), (True, "metrics on ")):
        print(f"{label}: CPU per {what}: median "
              f"{statistics.median(runs[metrics]):.1f} us "
              f"(runs: {', '.join(f'{r:.1f}' for r in runs[metrics])})")
    print(f"on/off: {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
