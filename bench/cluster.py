#!/usr/bin/env python3
"""A 3-broker strom cluster on ZooKeeper, on this machine: replicated produce throughput and
leader failover time.

  throughput  the shared yardstick's producer (kbench.py's scenario_produce: confluent-kafka,
              linger.ms=5, batch.size 1 MiB, no compression, kbench's defaults) sends the same
              N records of S bytes to a 6-partition topic, each in a fresh client process:
                rf3   RF=3, acks=all, min.insync.replicas=2, on the 3-broker cluster
                rf1   RF=1, acks=1, on the same cluster
                single  RF=1, acks=1, on one broker with the local metadata store
              The ratio rf3/rf1 is the headline. Broker CPU is read from /proc/<pid>/stat
              of every broker around each run.
  failover    a producer (acks=all, linger.ms=0, message.timeout.ms=2000) sends one record
              every 10 ms to each of the 3 partitions of an RF=3, min.insync.replicas=2
              topic; the leader of one partition (never the controller) is stopped. From the
              signal we time: the controller noticing (its "live brokers" log line), the
              election (its "leader A -> B" line), a client's Metadata showing the new
              leader, the first delivered record produced after the signal on that
              partition, the longest gap between deliveries on every partition, and (for the
              two partitions the victim only followed) when their high watermark moves
              again. Then the broker is restarted, the ISR waited for, and every
              acknowledged record is read back at the offset its delivery report gave.
                kill-default  SIGKILL, zookeeper.session.timeout.ms=18000 (the default)
                term-default  SIGTERM (controlled shutdown), same cluster
                kill-low      SIGKILL on a second cluster with zookeeper.session.timeout.ms
                              lowered (--low-session-ms, 2000)

ZooKeeper is Debian's (strom.testing.zookeeper); brokers are strom.testing.cluster's. Only
127.0.0.1 is used; every process started here is stopped by PID; every wait is bounded, and
--max-total-s caps the whole run. Medians over --repeat runs are printed as a markdown table;
--json writes every run. Brokers' logs are kept in bench/results/<stamp>-cluster-*.log.

Example:  python bench/cluster.py --repeat 3 --json /tmp/cluster.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from strom.testing.broker import BrokerProcess  # noqa: E402
from strom.testing.cluster import Cluster, wait_until  # noqa: E402
from strom.testing.zookeeper import ZooKeeperProcess  # noqa: E402

# One produce run in its own process, so kbench's client CPU figure is the producer's alone.
PRODUCE_RUNNER = r"""
import importlib.util, json, os, sys, types
spec = importlib.util.spec_from_file_location("kbench", sys.argv[1])
kb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kb)
cfg = json.loads(sys.argv[2])
args = types.SimpleNamespace(bootstrap=cfg["bootstrap"], linger_ms=cfg["linger_ms"],
                             batch_size=cfg["batch_size"], queue_max_messages=100000,
                             producer_conf=None, scenario_timeout=cfg["timeout"], broker_pid=0)
pids = cfg["broker_pids"]
def user_sys(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])
c0 = {p: kb.cpu_pid(p) for p in pids}
us0 = {p: user_sys(p) for p in pids}
rec = kb.scenario_produce(args, cfg["topic"], cfg["records"], cfg["size"], cfg["acks"])
rec["broker_cpu_s"] = [round(kb.cpu_pid(p) - c0[p], 3) for p in pids]
tck = os.sysconf("SC_CLK_TCK")
rec["broker_sys_s"] = [round((user_sys(p)[1] - us0[p][1]) / tck, 2) for p in pids]
rec["broker_rss_mib"] = [kb.rss_pid(p) for p in pids]
print(json.dumps(rec), flush=True)
"""

LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] (\w+) (.*)$")
PROBLEM = re.compile(r"\b(WARNING|WARN|ERROR|CRITICAL)\b|Traceback")


def log(*a) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def machine_busy_pct(seconds: float = 2.0) -> float | None:
    """Share of all cores busy over `seconds` (/proc/stat), before we start anything."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
        return sum(vals) - vals[3] - vals[4], sum(vals)
    try:
        b0, t0 = sample()
        time.sleep(seconds)
        b1, t1 = sample()
        return round(100.0 * (b1 - b0) / max(1, t1 - t0), 1)
    except (OSError, ValueError, IndexError):
        return None


def machine_notes() -> dict:
    notes = {"cpus": os.cpu_count(), "kernel": platform.release(),
             "python": platform.python_version()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                notes["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                notes["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        import confluent_kafka

        v = confluent_kafka.version()
        notes["confluent_kafka"] = v if isinstance(v, str) else v[0]
        notes["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    try:
        notes["git"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                      capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "strom"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        notes["strom_tree_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return notes


# --- broker logs ------------------------------------------------------------------------------
def log_events(broker: BrokerProcess) -> list[tuple[float, str, str]]:
    """(wall time, level, message) of every timestamped line of the broker's current run."""
    out = []
    for line in broker.log_text(current_run_only=True).splitlines():
        m = LOG_TS.match(line)
        if m:
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            out.append((t, m.group(3), m.group(4)))
    return out


class LogKeeper:
    """Collects warning/error lines of every broker run (a restart starts a new run)."""

    def __init__(self, stamp: str) -> None:
        self.stamp = stamp
        self.problems: dict[str, dict] = {}  # normalised text -> {count, example, where}
        self.files: list[str] = []

    def collect(self, name: str, broker: BrokerProcess) -> None:
        text = broker.log_text()
        path = RESULTS / f"{self.stamp}-cluster-{name}.log"
        path.write_text(text)
        self.files.append(str(path))
        for line in text.splitlines():
            if not PROBLEM.search(line) or "strom.testing: start" in line:
                continue
            body = LOG_TS.sub(r"\3 \4", line)
            key = re.sub(r"0x[0-9a-f]+|\d+", "N", body)[:160]
            entry = self.problems.setdefault(key, {"count": 0, "example": body[:300],
                                                   "where": []})
            entry["count"] += 1
            if name not in entry["where"]:
                entry["where"].append(name)


# --- throughput -------------------------------------------------------------------------------
def produce_run(args, bootstrap: str, topic: str, acks: str, pids: list[int]) -> dict:
    cfg = {"bootstrap": bootstrap, "topic": topic, "records": args.records,
           "size": args.record_size, "acks": acks, "linger_ms": args.linger_ms,
           "batch_size": args.batch_size, "timeout": args.scenario_timeout,
           "broker_pids": pids}
    proc = subprocess.Popen([sys.executable, "-c", PRODUCE_RUNNER, str(args.kbench),
                             json.dumps(cfg)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=args.scenario_timeout + 60)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "producer process overran; killed"}
    finally:  # also on SIGTERM or --max-total-s
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        return {"ok": False, "error": f"producer exit {proc.returncode}: {err.strip()[-300:]}"}
    return json.loads(lines[-1])


def create_topic(bootstrap: str, name: str, partitions: int, rf: int, config: dict) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, rf, config=config)])[name].result(30)

    def ready():
        md = admin.list_topics(topic=name, timeout=5).topics[name]
        return md.error is None and len(md.partitions) == partitions and all(
            p.leader >= 0 and len(p.isrs) == rf for p in md.partitions.values())
    wait_until(ready, 30, what=f"topic {name} ready")


def delete_topic(bootstrap: str, name: str) -> str | None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the result is in
    try:
        admin.delete_topics([name], operation_timeout=30)[name].result(40)
        return None
    except Exception as e:  # noqa: BLE001
        return str(e)


THROUGHPUT = {  # name -> (replication factor, acks, topic config, where)
    "rf3": (3, "all", {"min.insync.replicas": "2"}, "cluster"),
    "rf1": (1, "1", {}, "cluster"),
    "single": (1, "1", {}, "single"),
}


def run_throughput(args, zk, keeper: LogKeeper, runs: list) -> None:
    names = [n for n in THROUGHPUT if n != "single" or args.single]
    cluster = Cluster(zk.connect_string, 3, args.broker_conf, session_timeout_ms=18000)
    single = BrokerProcess(overrides=args.broker_conf, startup_timeout=30.0,
                           stop_timeout=30.0) if args.single else None
    try:
        t0 = time.monotonic()
        cluster.start()
        log(f"cluster up in {time.monotonic() - t0:.1f}s: {cluster.bootstrap}")
        if single:
            single.start()
        for rep in range(args.repeat):
            for name in names:
                rf, acks, config, where = THROUGHPUT[name]
                if where == "cluster":
                    bootstrap = cluster.bootstrap
                    pids = [b.pid for b in cluster.brokers.values()]
                else:
                    bootstrap, pids = single.bootstrap, [single.pid]
                topic = f"bench-{name}-r{rep}"
                create_topic(bootstrap, topic, args.partitions, rf, config)
                rec = produce_run(args, bootstrap, topic, acks, pids)
                rec.update({"kind": "throughput", "name": name, "rep": rep, "rf": rf,
                            "acks": acks, "brokers": len(pids)})
                derr = delete_topic(bootstrap, topic)
                if derr:
                    rec["delete_error"] = derr
                    log(f"deleting {topic} failed: {derr}")
                runs.append(rec)
                cpu = rec.get("broker_cpu_s") or []
                log(f"{name} r{rep}: {rec.get('msgs_per_s') or 0:,.0f} msg/s, "
                    f"{rec.get('mb_per_s') or 0:.1f} MB/s in {rec.get('wall_s')}s, "
                    f"broker CPU {cpu} s (system {rec.get('broker_sys_s')}), "
                    f"client CPU {rec.get('client_cpu_s')} s, "
                    f"ok={rec.get('ok')} {rec.get('first_error') or rec.get('error') or ''}")
    finally:
        for node_id, b in cluster.brokers.items():
            keeper.collect(f"tput-broker{node_id}", b)
        if single:
            keeper.collect("tput-single", single)
            single.close()
        cluster.close()


# --- failover ---------------------------------------------------------------------------------
class _ClientLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record) -> None:
        if len(self.lines) < 1000:
            self.lines.append(record.getMessage())


def failover_once(cluster: Cluster, topic: str, mode: str, window_s: float,
                  producer_conf: dict) -> dict:
    """Stop the leader of one partition (not the controller) while a producer writes to
    all three partitions every 10 ms; time the led partition's recovery and every
    partition's longest stall. Observation ends once every partition delivers a record
    produced after the new leader is visible and the victim has exited (plus 1 s), or
    `window_s` after the signal."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    parts = range(3)
    for p in parts:  # start from a healthy partition set
        cluster.wait_for_isr(topic, p, {1, 2, 3}, timeout=60)
    controller = cluster.controller_id()
    leaders = {p: cluster.leader_of(topic, p) for p in parts}
    part = next((p for p, b in leaders.items() if b != controller), 0)
    victim = leaders[part]
    victim_proc = cluster.brokers[victim]
    survivors = ",".join(b.bootstrap for i, b in cluster.brokers.items() if i != victim)
    admin = AdminClient({"bootstrap.servers": survivors, "socket.timeout.ms": 2000})
    rdlog = _ClientLog()
    lg = logging.getLogger(f"bench.rdkafka.{time.monotonic_ns()}")
    lg.propagate = False
    lg.addHandler(rdlog)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "linger.ms": 0, "message.timeout.ms": 2000, "logger": lg,
                         **producer_conf})
    sent: list[list] = []  # [t_produce, t_delivered, error, partition, offset]
    run_tag = f"{mode}-{time.time_ns()}"

    def send():
        for p in parts:
            rec = [time.monotonic(), None, None, p, None]
            # the payload names the record: acknowledged records are checked afterwards
            payload = f"{run_tag}:{len(sent)}".encode().ljust(100, b".")
            sent.append(rec)

            def cb(err, msg, rec=rec):
                rec[1], rec[2] = time.monotonic(), (str(err) if err else None)
                if err is None:
                    rec[4] = msg.offset()
            producer.produce(topic, payload, partition=p, on_delivery=cb)
        producer.poll(0)

    def pump(until):
        nxt = time.monotonic()
        while time.monotonic() < until():
            send()
            nxt += 0.01
            time.sleep(max(0.0, nxt - time.monotonic()))
            producer.poll(0)

    # warm up: the producer knows every broker and every partition's leader
    warm_end = time.monotonic() + 1.0
    pump(lambda: warm_end)
    producer.flush(5)
    warm_ok = sum(1 for r in sent if r[1] is not None and r[2] is None)

    moved: dict = {}
    isr_out: dict[int, float] = {}  # partition -> when Metadata first showed an ISR without the victim
    isr_back: dict[int, float] = {}  # partition -> when the victim was back in it (while down)
    stop_poll = threading.Event()

    def poll_metadata():
        while not stop_poll.is_set():
            try:
                md = admin.list_topics(topic=topic, timeout=2).topics[topic].partitions
                now = time.monotonic()
                pm = md[part]
                if "t" not in moved and pm.leader >= 0 and pm.leader != victim:
                    moved["t"], moved["leader"] = now, pm.leader
                for p in parts:
                    if victim not in md[p].isrs:
                        isr_out.setdefault(p, now)
                    elif p in isr_out:
                        isr_back.setdefault(p, now)
            except Exception:  # noqa: BLE001 - survivors may answer with errors meanwhile
                pass
            stop_poll.wait(0.05)

    # the brokers' side of a stall: when the high watermark of each partition the victim
    # follows moves again (ListOffsets, no consumer group: nothing else is created)
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    followed = [p for p in parts if p != part]

    def watermarks(timeout):
        fs = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest()
                                 for p in followed}, request_timeout=timeout)
        return {tp.partition: f.result().offset for tp, f in fs.items()}
    hw0 = watermarks(5)
    hw_moved: dict[int, float] = {}

    def poll_watermarks():
        while not stop_poll.is_set() and len(hw_moved) < len(followed):
            try:
                now_hw = watermarks(1)
                now = time.monotonic()
                for p, hi in now_hw.items():
                    if hi > hw0[p]:
                        hw_moved.setdefault(p, now)
            except Exception:  # noqa: BLE001
                pass
            stop_poll.wait(0.05)

    poller = threading.Thread(target=poll_metadata, daemon=True)
    poller.start()
    wm_poller = threading.Thread(target=poll_watermarks, daemon=True)
    t_event, wall_event = time.monotonic(), time.time()
    os.kill(victim_proc.pid, signal.SIGKILL if mode == "kill" else signal.SIGTERM)
    wm_poller.start()
    deadline = t_event + window_s
    state = {"done_at": None, "exit": None}

    def until():
        now = time.monotonic()
        if state["exit"] is None and not victim_proc.is_alive():
            state["exit"] = now
        if state["done_at"] is None and "t" in moved and state["exit"] is not None:
            # records produced once the new leader is visible and the victim is gone: a
            # delivery before the victim's exit does not prove the partition is writable
            after = max(moved["t"], state["exit"])
            resumed = {r[3] for r in sent if r[0] >= after and r[1] is not None
                       and r[2] is None}
            if len(resumed) == len(parts):
                state["done_at"] = now + 1.0  # a second more: catch later stalls
        return min(deadline, state["done_at"] or deadline)

    pump(until)
    t_end = time.monotonic()
    stop_poll.set()
    producer.flush(3)
    poller.join(5)
    wm_poller.join(5)
    exit_code = victim_proc.stop(timeout=30)  # reaps it (already gone after a kill)

    per_part = {}
    for p in parts:
        ok = sorted(r[1] for r in sent if r[3] == p and r[1] is not None and r[2] is None
                    and r[1] <= t_end)
        first = min((r[1] for r in sent if r[3] == p and r[0] >= t_event and r[1] is not None
                     and r[2] is None and r[1] <= t_end), default=None)
        seq = ([t for t in ok if t < t_event][-1:] or [t_event]) + \
            [t for t in ok if t >= t_event] + [t_end]
        gap, start = max((b - a, a) for a, b in zip(seq, seq[1:], strict=False))
        # a partition that did not deliver again before the end is still stalled
        resumed = bool(ok) and ok[-1] >= t_event and (t_end - ok[-1]) < 0.5
        per_part[p] = {"leader_before": leaders[p],
                       "isr_without_victim_s": round(isr_out[p] - t_event, 3)
                       if p in isr_out else None,
                       "victim_back_in_isr_s": round(isr_back[p] - t_event, 3)
                       if p in isr_back else None,
                       "high_watermark_moved_s": round(hw_moved[p] - t_event, 3)
                       if p in hw_moved else None,
                       "first_ok_s": None if first is None else round(first - t_event, 3),
                       "max_gap_s": round(gap, 3), "gap_started_s": round(start - t_event, 3),
                       "resumed": resumed}
    errors: dict[str, int] = {}
    for r in sent:
        if r[2]:
            errors[r[2]] = errors.get(r[2], 0) + 1
    # the controller's view, from the brokers' logs (wall clock, ms resolution)
    detect = elect = None
    readds = []
    for b in cluster.brokers.values():
        if b is victim_proc:
            continue
        for t, _lvl, msg in log_events(b):
            if t < wall_event - 0.002:
                continue
            m = re.search(r"Controller \d+: live brokers \[([\d, ]*)\]", msg)
            if m and str(victim) not in m.group(1).replace(" ", "").split(","):
                detect = min(detect or 1e18, t - wall_event)
            if f"{topic}-{part}: leader {victim} -> " in msg:
                elect = min(elect or 1e18, t - wall_event)
            m = re.search(rf"({re.escape(topic)}-\d+): expanding ISR from \[.*\] to "
                          rf"\[.*\b{victim}\]", msg)
            if m:  # every line read here predates the victim's restart
                readds.append(f"{m.group(1)} +{t - wall_event:.2f}s")
    stalls = {p: f["max_gap_s"] for p, f in per_part.items()}
    worst = max(stalls, key=stalls.get)
    rec = {
        "kind": "failover", "mode": mode, "partition": part, "victim": victim,
        "controller": controller, "new_leader": moved.get("leader"),
        "warmup_delivered": warm_ok, "window_s": window_s,
        "controller_saw_s": None if detect is None else round(detect, 3),
        "elected_s": None if elect is None else round(elect, 3),
        "metadata_s": round(moved["t"] - t_event, 3) if "t" in moved else None,
        "first_ok_s": per_part[part]["first_ok_s"],
        "led_max_gap_s": per_part[part]["max_gap_s"],
        "led_resumed": per_part[part]["resumed"],
        "all_max_gap_s": stalls[worst], "worst_partition": worst,
        # the partitions the victim only followed: brokers' commit vs the client's delivery
        "followed_hw_moved_s": None if len(hw_moved) < len(followed) else
        round(max(hw_moved.values()) - t_event, 3),
        "followed_first_ok_s": None if any(per_part[p]["first_ok_s"] is None for p in followed)
        else max(per_part[p]["first_ok_s"] for p in followed),
        "all_resumed": all(f["resumed"] for f in per_part.values()),
        "partitions": per_part,
        "victim_readded_to_isr": readds,
        "victim_exit_s": None if state["exit"] is None else round(state["exit"] - t_event, 3),
        "victim_exit_code": exit_code,
        "observed_s": round(t_end - t_event, 3),
        "sent": len(sent), "failed": sum(errors.values()), "errors": errors,
        "client_log_lines": len(rdlog.lines), "client_log": rdlog.lines[:20],
        "ok": per_part[part]["first_ok_s"] is not None and "t" in moved,
    }
    # bring the victim back and wait for a full ISR again
    t0 = time.monotonic()
    try:
        victim_proc.start()
        for p in parts:
            cluster.wait_for_isr(topic, p, {1, 2, 3}, timeout=60)
        rec["rejoin_isr_s"] = round(time.monotonic() - t0, 3)
    except Exception as e:  # noqa: BLE001
        rec["rejoin_error"] = str(e)[:300]
    rec.update(check_acknowledged(cluster, topic, run_tag, sent))
    rec["ok"] = rec["ok"] and rec["acked_lost"] == 0
    return rec


def check_acknowledged(cluster: Cluster, topic: str, run_tag: str, sent: list) -> dict:
    """Read the partitions back: every record acknowledged (acks=all) must be there, at the
    offset its delivery report gave. Returns {"acked": n, "acked_lost": n, ...}."""
    from confluent_kafka import Consumer, TopicPartition

    want: dict[int, dict[int, bytes]] = {}
    for i, r in enumerate(sent):
        if r[2] is None and r[4] is not None:
            want.setdefault(r[3], {})[r[4]] = f"{run_tag}:{i}".encode().ljust(100, b".")
    acked = sum(len(v) for v in want.values())
    if not want:
        return {"acked": 0, "acked_lost": 0}
    # one bootstrap broker: the group coordinator lookup (confluent-kafka needs a group.id)
    # then goes to one broker
    node = cluster.controller_id()
    c = Consumer({"bootstrap.servers": cluster.brokers[node].bootstrap,
                  "group.id": f"bench-check-{run_tag}", "enable.auto.commit": False,
                  "enable.partition.eof": True, "log_level": 0})
    found: dict[int, dict[int, bytes]] = {p: {} for p in want}
    try:
        c.assign([TopicPartition(topic, p, min(offs)) for p, offs in want.items()])
        last = {p: max(offs) for p, offs in want.items()}
        done: set[int] = set()
        deadline = time.monotonic() + 30
        while len(done) < len(want) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                p = m.partition()
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        done.add(p)
                    continue
                found[p][m.offset()] = m.value()
                if m.offset() >= last[p]:
                    done.add(p)
    finally:
        c.close()
    lost = [(p, o) for p, offs in want.items() for o, v in offs.items()
            if found[p].get(o) != v]
    return {"acked": acked, "acked_lost": len(lost),
            "acked_lost_examples": [f"p{p}@{o}" for p, o in lost[:10]]}


def run_failover(args, zk, keeper: LogKeeper, runs: list) -> None:
    plan = [("default", 18000, ["kill", "term"]), ("low", args.low_session_ms, ["kill"])]
    for label, session_ms, modes in plan:
        cluster = Cluster(zk.connect_string, 3, args.broker_conf, session_timeout_ms=session_ms)
        try:
            cluster.start()
            topic = "bench-failover"
            create_topic(cluster.bootstrap, topic, 3, 3, {"min.insync.replicas": "2"})
            for rep in range(args.repeat):
                for mode in modes:
                    name = f"{mode}-{label}"
                    window = (session_ms / 1000 if mode == "kill" else 0) + args.observe_s
                    rec = failover_once(cluster, topic, mode, window, args.producer_conf)
                    rec.update({"name": name, "rep": rep, "session_timeout_ms": session_ms})
                    runs.append(rec)
                    log(f"{name} r{rep}: victim {rec['victim']} (led p{rec['partition']}), "
                        f"controller saw {rec['controller_saw_s']}s, elected "
                        f"{rec['elected_s']}s, metadata {rec['metadata_s']}s, first delivery "
                        f"{rec['first_ok_s']}s; longest stall: led partition "
                        f"{rec['led_max_gap_s']}s, any partition {rec['all_max_gap_s']}s "
                        f"(p{rec['worst_partition']}, all resumed: {rec['all_resumed']}); "
                        f"victim back in ISR: {rec['victim_readded_to_isr'] or 'no'}; "
                        f"victim exited {rec['victim_exit_s']}s; {rec['failed']} records "
                        f"timed out; ISR whole {rec.get('rejoin_isr_s')}s after restart; "
                        f"acknowledged records missing: {rec.get('acked_lost')} of "
                        f"{rec.get('acked')}")
        finally:
            for node_id, b in cluster.brokers.items():
                keeper.collect(f"failover-{label}-broker{node_id}", b)
            cluster.close()


# --- report -----------------------------------------------------------------------------------
def summarise(runs: list) -> dict:
    out: dict = {}
    for name in THROUGHPUT:
        rs = [r for r in runs if r.get("kind") == "throughput" and r.get("name") == name]
        if not rs:
            continue
        good = [r for r in rs if r.get("ok")]
        cpu = [sum(r["broker_cpu_s"]) for r in good]
        mb = [r["mb_per_s"] * r["wall_s"] for r in good]  # MB written in the run
        out[name] = {
            "runs": len(rs), "ok_runs": len(good),
            "msgs_per_s": median(r["msgs_per_s"] for r in good),
            "mb_per_s": median(r["mb_per_s"] for r in good),
            "wall_s": median(r["wall_s"] for r in good),
            "broker_cpu_s": median(cpu),
            "broker_cpu_s_each": [median(r["broker_cpu_s"][i] for r in good)
                                  for i in range(len(good[0]["broker_cpu_s"]))] if good else [],
            "broker_cpu_ms_per_mb": median(1000 * c / m for c, m in zip(cpu, mb, strict=True) if m),
            "client_cpu_s": median(r.get("client_cpu_s") for r in good),
            "machine_cpu_busy_pct": median(r.get("machine_cpu_busy_pct") for r in good),
            # cores busy with something other than our brokers and producer (other work)
            "other_cores": median(
                r["machine_cpu_busy_pct"] / 100 * (os.cpu_count() or 1)
                - (sum(r["broker_cpu_s"]) + r["client_cpu_s"]) / r["wall_s"]
                for r in good if r.get("machine_cpu_busy_pct") is not None),
            "range_mb_per_s": [min(r["mb_per_s"] for r in good),
                               max(r["mb_per_s"] for r in good)] if good else None,
        }
    if out.get("rf3", {}).get("mb_per_s") and out.get("rf1", {}).get("mb_per_s"):
        out["ratio_rf3_rf1"] = round(out["rf3"]["mb_per_s"] / out["rf1"]["mb_per_s"], 3)
        pairs = {}
        for r in runs:
            if r.get("kind") == "throughput" and r.get("ok") and r["name"] in ("rf3", "rf1"):
                pairs.setdefault(r["rep"], {})[r["name"]] = r["mb_per_s"]
        per_rep = [p["rf3"] / p["rf1"] for p in pairs.values() if len(p) == 2]
        out["ratio_rf3_rf1_per_repeat"] = [round(x, 3) for x in per_rep]
    for name in ("kill-default", "term-default", "kill-low"):
        rs = [r for r in runs if r.get("kind") == "failover" and r.get("name") == name]
        if not rs:
            continue
        fig = {"runs": len(rs), "ok_runs": sum(1 for r in rs if r.get("ok")),
               "session_timeout_ms": rs[0]["session_timeout_ms"],
               "window_s": rs[0]["window_s"],
               "all_resumed_runs": sum(1 for r in rs if r.get("all_resumed")),
               "led_resumed_runs": sum(1 for r in rs if r.get("led_resumed")),
               "victim_readded_runs": sum(1 for r in rs if r.get("victim_readded_to_isr"))}
        for k in ("controller_saw_s", "elected_s", "metadata_s", "first_ok_s",
                  "led_max_gap_s", "all_max_gap_s", "followed_hw_moved_s",
                  "followed_first_ok_s", "failed", "rejoin_isr_s", "victim_exit_s"):
            fig[k] = median(r.get(k) for r in rs)
            fig[k + "_all"] = [r.get(k) for r in rs]
        fig["acked"] = sum(r.get("acked", 0) for r in rs)
        fig["acked_lost"] = sum(r.get("acked_lost", 0) for r in rs)
        out[name] = fig
    return out


def fmt(v, unit="") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return f"{v}{unit}"


def print_table(s: dict, args) -> None:
    n = args.repeat
    rows = []
    label = {"rf3": "RF=3, acks=all, min.insync.replicas=2, 3 brokers",
             "rf1": "RF=1, acks=1, 3 brokers",
             "single": "RF=1, acks=1, 1 broker (local store)"}
    for name in THROUGHPUT:
        f = s.get(name)
        if not f:
            continue
        rows.append((f"produce {args.records:,} x {args.record_size} B, {label[name]}",
                     f"{fmt(f['mb_per_s'])} MB/s, {fmt(f['msgs_per_s'])} msg/s "
                     f"({f['ok_runs']}/{f['runs']} ok)", ""))
        each = " + ".join(fmt(c) for c in f["broker_cpu_s_each"])
        rows.append((f"  broker CPU ({label[name].split(', ')[-1]})",
                     f"{fmt(f['broker_cpu_s'])} s ({each}) in {fmt(f['wall_s'])} s; "
                     f"{fmt(f['broker_cpu_ms_per_mb'])} ms/MB; client {fmt(f['client_cpu_s'])} s; "
                     f"machine {fmt(f['machine_cpu_busy_pct'])} % busy "
                     f"(other work: {fmt(f['other_cores'])} cores)", ""))
    if "ratio_rf3_rf1" in s:
        rows.append(("ratio RF=3 acks=all / RF=1 acks=1 (MB/s)",
                     f"**{s['ratio_rf3_rf1']:.2f}** (per repeat: "
                     f"{', '.join(f'{x:.2f}' for x in s['ratio_rf3_rf1_per_repeat'])})",
                     "≥ 0.40"))
    targets = {"kill-default": "< 10 s", "term-default": "", "kill-low": "< 3 s"}
    for name, what in (("kill-default", "SIGKILL, zookeeper.session.timeout.ms=18000"),
                       ("term-default", "SIGTERM (controlled shutdown), 18000"),
                       ("kill-low", f"SIGKILL, zookeeper.session.timeout.ms="
                                    f"{args.low_session_ms}")):
        f = s.get(name)
        if not f:
            continue
        head = "led_max_gap_s" if name.startswith("term") else "first_ok_s"
        rows.append((f"failover, {what}: "
                     + ("longest stall of the partition the victim led" if name.startswith("term")
                        else "signal to first delivered acks=all record on the victim's partition"),
                     f"**{fmt(f[head], ' s')}** ({f['ok_runs']}/{f['runs']} ok; all: "
                     f"{', '.join(fmt(x) for x in f[head + '_all'])})"
                     + (f"; still stalled when the {fmt(f['window_s'])} s watch ended in "
                        f"{f['runs'] - f['led_resumed_runs']}/{f['runs']} run(s)"
                        if head == "led_max_gap_s" and f["led_resumed_runs"] < f["runs"]
                        else ""), targets[name]))
        still = f["runs"] - f["all_resumed_runs"]
        rows.append(("  longest stall of any of the 3 partitions (victim leads 1, follows 2)",
                     f"{fmt(f['all_max_gap_s'], ' s')} (all: "
                     f"{', '.join(fmt(x) for x in f['all_max_gap_s_all'])})"
                     + (f"; still stalled when the {fmt(f['window_s'])} s watch ended in "
                        f"{still}/{f['runs']} run(s)" if still else ""),
                     targets[name]))
        rows.append(("  controller saw / elected / client metadata / first delivery "
                     "(victim's partition); high watermark moves / first delivery (the 2 "
                     "partitions it followed)",
                     " / ".join(fmt(f[k], " s") for k in ("controller_saw_s", "elected_s",
                                                         "metadata_s", "first_ok_s"))
                     + "; " + " / ".join(fmt(f[k], " s") for k in ("followed_hw_moved_s",
                                                                  "followed_first_ok_s"))
                     + f"; victim re-added to an ISR while down in {f['victim_readded_runs']}/"
                       f"{f['runs']} run(s); {fmt(f['failed'])} records timed out; "
                       f"ISR whole {fmt(f['rejoin_isr_s'], ' s')} after restart; "
                       f"acknowledged records missing afterwards: {f['acked_lost']} of "
                       f"{f['acked']:,}", ""))
    print(f"\nmedians of {n} run(s)\n")
    print("| figure | value | target |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--repeat", type=int, default=1, help="runs of every scenario (medians)")
    ap.add_argument("--json", help="write every run and the medians to this file")
    ap.add_argument("--scenarios", default="throughput,failover", help="either or both")
    ap.add_argument("--records", type=int, default=2_000_000, help="records per produce run")
    ap.add_argument("--record-size", type=int, default=1000, help="bytes per record")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of throughput topics")
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1048576, help="kbench's default")
    ap.add_argument("--no-single", dest="single", action="store_false",
                    help="skip the single-broker (local store) throughput run")
    ap.add_argument("--low-session-ms", type=int, default=2000,
                    help="zookeeper.session.timeout.ms of the second failover cluster")
    ap.add_argument("--observe-s", type=float, default=20.0,
                    help="failover: longest watch after the signal, beyond the session "
                         "timeout for a kill; a partition still stalled then is reported so")
    ap.add_argument("--producer-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="failover: extra librdkafka settings of the producer (repeatable), "
                         "e.g. max.in.flight.requests.per.connection=5")
    ap.add_argument("--broker-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a broker setting of every broker started (repeatable), e.g. "
                         "log.page.cache.window.bytes=-1 for an A/B run")
    ap.add_argument("--scenario-timeout", type=float, default=120.0,
                    help="seconds per produce run")
    ap.add_argument("--max-total-s", type=float, default=1200.0, help="cap on the whole run")
    ap.add_argument("--kbench", help="kbench.py (default ../shared/bench/kbench.py)")
    args = ap.parse_args(argv)
    args.kbench = Path(args.kbench) if args.kbench else REPO.parent / "shared" / "bench" / "kbench.py"
    if not args.kbench.is_file():
        sys.exit(f"cluster: kbench.py not found at {args.kbench} (pass --kbench PATH)")
    scenarios = {x.strip() for x in args.scenarios.split(",") if x.strip()}
    try:
        args.producer_conf = dict(kv.split("=", 1) for kv in args.producer_conf)
    except ValueError:
        sys.exit("cluster: --producer-conf takes KEY=VALUE")
    try:
        args.broker_conf = dict(kv.split("=", 1) for kv in args.broker_conf)
    except ValueError:
        sys.exit("cluster: --broker-conf takes KEY=VALUE")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def on_alarm(*_):
        raise TimeoutError(f"--max-total-s {args.max_total_s:.0f} exceeded")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: blocks
    signal.alarm(int(args.max_total_s))
    started = time.monotonic()
    runs: list = []
    keeper = LogKeeper(stamp)
    error = None
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": "python bench/cluster.py " + " ".join(sys.argv[1:] if argv is None
                                                              else argv),
            "machine": machine_notes(), "options": {k: str(v) for k, v in vars(args).items()}}
    meta["machine_busy_before_pct"] = machine_busy_pct()
    if (meta["machine_busy_before_pct"] or 0) > 10:
        log(f"warning: the machine is already {meta['machine_busy_before_pct']} % busy; "
            "figures will be low and noisy")
    try:
        with ZooKeeperProcess() as zk:
            log(f"ZooKeeper on {zk.connect_string} (pid {zk.pid})")
            if "throughput" in scenarios:
                run_throughput(args, zk, keeper, runs)
            if "failover" in scenarios:
                run_failover(args, zk, keeper, runs)
    except Exception as e:  # noqa: BLE001 - report what was measured so far
        error = f"{type(e).__name__}: {e}"
        log(f"aborted: {error}")
    finally:
        signal.alarm(0)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    summary = summarise(runs)
    problems = sorted(keeper.problems.values(), key=lambda e: -e["count"])
    result = {"meta": meta, "summary": summary, "runs": runs, "error": error,
              "broker_log_problems": problems, "broker_logs": keeper.files}
    out = Path(args.json) if args.json else RESULTS / f"{stamp}-cluster.json"
    out.write_text(json.dumps(result, indent=1))
    log(f"done in {meta['wall_s']:.0f}s; results in {out}; broker logs in "
        f"{RESULTS}/{stamp}-cluster-*.log")
    print_table(summary, args)
    m = meta["machine"]
    print(f"\n{m.get('cpus')} cores ({m.get('cpu', '?')}), {m.get('mem_gib')} GiB; busy "
          f"{meta['machine_busy_before_pct']} % before the run; strom {m.get('git')}"
          f"{' + uncommitted changes' if m.get('strom_tree_dirty') else ''}; "
          f"librdkafka {m.get('librdkafka')}; {meta['wall_s']:.0f} s in all")
    if problems:
        print(f"\nbroker log warnings/errors ({sum(p['count'] for p in problems)} lines):")
        for p in problems[:12]:
            print(f"- {p['count']} x [{', '.join(p['where'][:4])}] {p['example'][:220]}")
    if error:
        print(f"\nrun aborted: {error}")
    bad = error or any(not r.get("ok") for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
