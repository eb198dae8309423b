#!/usr/bin/env python3
"""Steady low-rate latency: small produce requests at a fixed rate, a consumer tailing them.

The scenario of issue 17, run against strom and (when installed) Tansu in one run:

- one single-partition topic per broker (`--partitions` N: N partitions, record i sent to
  partition i mod N, the consumer assigned to all of them);
- a confluent-kafka producer with `linger.ms=0`, `acks=1` sends one record (`--size` bytes)
  every `1/--rate` seconds (2,000 requests/s by default), so every record is its own
  Produce request;
- a consumer `assign()`ed to the partition at its end tails it with `fetch.wait.max.ms=500`
  (the consumer's long poll is answered when data arrives, not when the wait expires):
  confluent-kafka's by default (librdkafka fetches without a fetch session), or with
  `--consumer kafka-python` kafka-python's, which fetches in an incremental fetch session
  (KIP-227), as the Java client does (`--consumer-conf` then takes kafka-python's
  settings, e.g. `enable_incremental_fetch_sessions=False`; values are parsed as Python
  literals);
- `--runs` runs back to back against the same broker process, `--msgs` records each.

For each run it reports delivery latency (produce() to the delivery report) and end-to-end
latency (produce() to the consumer's poll returning the record) as p50/p99/p99.9/max, the
broker's CPU seconds per 10,000 round trips (from /proc), and, for strom, the event loop's
lag over the run (asked of the broker with SIGUSR1, see strom/server/loop_lag.py).

`--busy` adds a second pass of the same runs with a process spinning on one core beside
them (pinned with sched_setaffinity to the last CPU), as when the machine has other work.

`--quick` is the regression guard: strom only, 2 runs of 2,000 records, no busy pass.
Results go to bench/results/<stamp>-latency.jsonl; a table of medians is printed.
Never used as a timed assertion.
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import resource
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    REPO,
    RESULTS,
    cpu_s,
    find_tansu,
    free_port,
    start_broker,
    stop_broker,
)
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def log(*a):
    print(f"[latency {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def pct(vals, p):
    if not vals:
        return None
    k = min(len(vals) - 1, max(0, round(p / 100.0 * (len(vals) - 1))))
    return round(vals[k], 3)


def create_topic(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    fut.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and \
                all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"topic {topic} has no leader after 30 s")


class ConfluentTail:
    """confluent-kafka's consumer tailing the topic's partitions from their ends."""

    def __init__(self, bootstrap, topic, conf, partitions=1):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "latency-bench",
            "enable.auto.commit": False, "fetch.wait.max.ms": 500, "fetch.min.bytes": 1,
            **dict(kv.split("=", 1) for kv in conf),
        })
        self.consumer.assign([
            TopicPartition(topic, i, self.consumer.get_watermark_offsets(
                TopicPartition(topic, i), timeout=10)[1]) for i in range(partitions)])

    def poll(self, timeout_s):
        """The values of the records that came (at most one here)."""
        msg = self.consumer.poll(timeout_s)
        if msg is None or msg.error():
            return []
        return [msg.value()]

    def close(self):
        self.consumer.close()


class KafkaPythonTail:
    """kafka-python's consumer tailing the topic's partitions from their ends, in a fetch
    session."""

    def __init__(self, bootstrap, topic, conf, partitions=1):
        from kafka import KafkaConsumer
        from kafka import TopicPartition as KTopicPartition
        settings = {"fetch_max_wait_ms": 500, "fetch_min_bytes": 1,
                    "enable_auto_commit": False}
        settings.update((k, ast.literal_eval(v)) for k, v in
                        (kv.split("=", 1) for kv in conf))
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, **settings)
        tps = [KTopicPartition(topic, i) for i in range(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)

    def poll(self, timeout_s):
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [r.value for records in batches.values() for r in records]

    def close(self):
        self.consumer.close()


CONSUMERS = {"confluent-kafka": ConfluentTail, "kafka-python": KafkaPythonTail}


def one_run(bootstrap, topic, args, pid):
    """Produce args.msgs records at args.rate while a consumer tails them; returns a dict."""
    n, interval = args.msgs, 1.0 / args.rate
    pad = os.urandom(max(0, args.size - 12))
    consumer = CONSUMERS[args.consumer](bootstrap, topic, args.consumer_conf, args.partitions)
    settle = time.monotonic() + 1.0  # the first fetches, so we measure the steady state
    while time.monotonic() < settle:
        consumer.poll(0.05)

    sent_ns = [0] * n
    delivery_ns = [None] * n
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
            return
        seq = struct.unpack_from(">qI", msg.value())[1]
        delivery_ns[seq] = time.perf_counter_ns() - sent_ns[seq]

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1,
                         "enable.idempotence": False, "on_delivery": on_delivery,
                         **dict(kv.split("=", 1) for kv in args.producer_conf)})
    producer.list_topics(topic, timeout=10)  # connected before the clock starts
    late_max = [0.0]

    def produce_loop():
        t0 = time.perf_counter()
        for i in range(n):
            target = t0 + i * interval
            while True:
                d = target - time.perf_counter()
                if d <= 0:
                    break
                if args.spin_pacing:
                    # the old pacing: poll() rounds a wait under 1 ms down to 0, so at
                    # 2,000/s this spins and takes a core from the broker
                    producer.poll(d)
                else:
                    time.sleep(d)  # delivery reports are served by `serve_reports`
            late_max[0] = max(late_max[0], (time.perf_counter() - target) * 1000)
            now = time.perf_counter_ns()
            sent_ns[i] = now
            producer.produce(topic, struct.pack(">qI", now, i) + pad,
                             partition=i % args.partitions)
            if args.spin_pacing:
                producer.poll(0)
        producer.flush(30)

    producing = threading.Event()

    def serve_reports():
        # a blocking poll wakes when a report arrives, so a delivery is timed when it
        # happens, not at the producer's next send
        while producing.is_set():
            producer.poll(0.05)

    e2e_ns = [None] * n
    received = 0
    cpu0 = cpu_s(pid)
    client0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    if args.lag:
        os.kill(pid, signal.SIGUSR1)  # resets the broker's loop-lag window
    th = threading.Thread(target=produce_loop, daemon=True)
    producing.set()
    reporter = None
    if not args.spin_pacing:
        reporter = threading.Thread(target=serve_reports, daemon=True)
        reporter.start()
    th.start()
    deadline = time.monotonic() + n * interval + 30
    while received < n and time.monotonic() < deadline:
        values = consumer.poll(0.05)
        now = time.perf_counter_ns()
        for value in values:
            sent, seq = struct.unpack_from(">qI", value)
            if e2e_ns[seq] is None:
                e2e_ns[seq] = now - sent
                received += 1
    th.join(30)
    producing.clear()
    if reporter is not None:
        reporter.join(5)
    wall = time.perf_counter() - wall0
    cpu = cpu_s(pid) - cpu0
    client1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime)
    lag = read_loop_lag(args, pid) if args.lag else None
    consumer.close()
    # the producer's connections end with the run, so later runs do not share the broker
    # with it (older confluent-kafka has no close(): there only its collection ends them)
    close = getattr(producer, "close", None)
    if close is not None:
        close()
    dl = sorted(x / 1e6 for x in delivery_ns if x is not None)
    e2e = sorted(x / 1e6 for x in e2e_ns if x is not None)
    rec = {
        "consumer": args.consumer, "partitions": args.partitions, "msgs": n, "rate": args.rate, "size": args.size,
        "delivered": len(dl),
        "received": received, "errors": len(errors), "first_error": errors[0] if errors else None,
        "producer_max_lateness_ms": round(late_max[0], 3), "wall_s": round(wall, 3),
        "broker_cpu_s": round(cpu, 3),
        "broker_cpu_s_per_10k": round(cpu * 10000 / max(1, received), 3),
        # the client's own CPU (producer, consumer and librdkafka's threads) and the
        # machine's load: a busy client or machine, not the broker, may set the tail
        "client_cpu_s": round(client_cpu, 3), "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    for name, vals in (("delivery", dl), ("e2e", e2e)):
        rec.update({f"{name}_p50_ms": pct(vals, 50), f"{name}_p99_ms": pct(vals, 99),
                    f"{name}_p999_ms": pct(vals, 99.9),
                    f"{name}_max_ms": round(vals[-1], 3) if vals else None})
    if lag:
        rec.update(lag)
    rec["ok"] = received == n and len(dl) == n and not errors
    return rec


def read_loop_lag(args, pid):
    """Ask strom for its loop lag (SIGUSR1 writes one JSON line to its log); parse it."""
    size = args.log_path.stat().st_size
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(args.log_path, "rb") as f:
            f.seek(size)
            for line in f.read().decode(errors="replace").splitlines():
                if "event loop lag" in line and "{" in line:
                    d, _ = json.JSONDecoder().raw_decode(line[line.index("{"):])
                    return {"loop_lag_p50_ms": d["p50_ms"], "loop_lag_p99_ms": d["p99_ms"],
                            "loop_lag_max_ms": d["max_ms"]}
        time.sleep(0.05)
    return None


def spin(stop_at):
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except OSError:
        pass
    while time.monotonic() < stop_at:
        pass


def bench(name, label, tree, args, tansu, out):
    """Start one broker (strom from `tree` when given: run in that directory, with it on
    PYTHONPATH), run the passes, stop it."""
    tmpdir = tempfile.mkdtemp(prefix=f"{name}-latency-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    args.log_path = RESULTS / f"{args.stamp}-latency-{label}.log"
    args.lag = name == "strom" and not args.no_loop_lag and tree is None
    records = []
    saved = os.environ.get("PYTHONPATH")
    with open(args.log_path, "wb") as logf:
        if tree is not None:
            os.environ["PYTHONPATH"] = str(Path(tree).resolve())
        try:
            proc, info = start_broker(name, port, tmpdir, logf, tansu, 30,
                                      cwd=REPO if tree is None else Path(tree).resolve())
        finally:
            if tree is not None:
                if saved is None:
                    del os.environ["PYTHONPATH"]
                else:
                    os.environ["PYTHONPATH"] = saved
        try:
            if "error" in info:
                log(f"{name}: {info['error']}")
                return records
            topic = f"latency-{args.stamp}"
            create_topic(bootstrap, topic, args.partitions)
            passes = [False, True] if args.busy else [False]
            for busy in passes:
                spinner = None
                if busy:
                    stop_at = time.monotonic() + args.runs * (args.msgs / args.rate + 15) + 30
                    spinner = multiprocessing.Process(target=spin, args=(stop_at,), daemon=True)
                    spinner.start()
                try:
                    for run in range(1, args.runs + 1):
                        rec = {"broker": label, "busy": busy, "run": run,
                               **one_run(bootstrap, topic, args, proc.pid)}
                        log(json.dumps(rec))
                        records.append(rec)
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                finally:
                    if spinner is not None:
                        spinner.terminate()
                        spinner.join(5)
        finally:
            stop_broker(proc)
    return records


FIGURES = ["delivery_p50_ms", "delivery_p99_ms", "delivery_p999_ms", "e2e_p50_ms",
           "e2e_p99_ms", "e2e_p999_ms", "broker_cpu_s_per_10k", "loop_lag_p99_ms",
           "loop_lag_max_ms", "client_cpu_s", "loadavg_1m"]


def print_table(records):
    groups = {}
    for r in records:
        groups.setdefault((r["broker"], r["busy"]), []).append(r)
    head = ["figure (median of runs; worst run)"] + [
        f"{b}{' busy' if busy else ''}" for b, busy in groups]
    rows = []
    for fig in FIGURES:
        row = [fig]
        for recs in groups.values():
            vals = [r[fig] for r in recs if r.get(fig) is not None]
            row.append(f"{statistics.median(vals):.3g} ({max(vals):.3g})" if vals else "-")
        rows.append(row)
    ok = ["runs ok"] + [f"{sum(r['ok'] for r in recs)}/{len(recs)}" for recs in groups.values()]
    rows.append(ok)
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
    for row in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="strom,tansu",
                    help="comma-separated: strom, tansu (default both; tansu when installed)")
    ap.add_argument("--runs", type=int, default=5, help="runs per broker (default 5)")
    ap.add_argument("--msgs", type=int, default=6000, help="records per run (default 6000)")
    ap.add_argument("--rate", type=float, default=2000.0, help="records per second (2000)")
    ap.add_argument("--size", type=int, default=100, help="record value bytes (100)")
    ap.add_argument("--partitions", type=int, default=1,
                    help="partitions of the topic (1); record i goes to partition i mod N "
                         "and the consumer tails them all")
    ap.add_argument("--busy", action="store_true",
                    help="also run with a process spinning on one core")
    ap.add_argument("--producer-conf", action="append", default=[], metavar="K=V",
                    help="extra producer setting (repeatable), the same for every broker")
    ap.add_argument("--consumer", choices=sorted(CONSUMERS), default="confluent-kafka",
                    help="the tailing consumer's client (default confluent-kafka; "
                         "kafka-python fetches in a fetch session, as the Java client does)")
    ap.add_argument("--consumer-conf", action="append", default=[], metavar="K=V",
                    help="extra consumer setting (repeatable), the same for every broker "
                         "(kafka-python: its own names, values as Python literals)")
    ap.add_argument("--spin-pacing", action="store_true",
                    help="pace the producer with poll(wait) as before: librdkafka rounds a "
                         "wait under 1 ms to 0, so the client spins on a core")
    ap.add_argument("--no-loop-lag", action="store_true",
                    help="do not ask strom for its event-loop lag")
    ap.add_argument("--strom-tree", action="append", default=[], metavar="LABEL=DIR",
                    help="also run strom from another source tree (e.g. a worktree of an "
                         "older commit), run in that directory (python -m strom imports from it), as series LABEL; its "
                         "loop lag is not asked for (older builds lack the SIGUSR1 report)")
    ap.add_argument("--quick", action="store_true",
                    help="regression guard: strom only, 2 runs of 2000 records")
    args = ap.parse_args()
    if args.quick:
        args.brokers, args.runs, args.msgs, args.busy = "strom", 2, 2000, False
    args.stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tansu = find_tansu()
    names = [b for b in args.brokers.split(",") if b]
    if "tansu" in names and tansu is None:
        log("tansu is not installed (pip install .[bench]); running strom only")
        names.remove("tansu")
    runs = []  # (broker, label, tree)
    for name in names:
        if name == "strom":
            runs += [("strom", label, tree) for label, tree in
                     (kv.split("=", 1) for kv in args.strom_tree)]
        runs.append((name, name, None))
    records = []
    with open(RESULTS / f"{args.stamp}-latency.jsonl", "w") as out:
        for name, label, tree in runs:
            records += bench(name, label, tree, args, tansu, out)
    print_table(records)
    return 0 if records and all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
