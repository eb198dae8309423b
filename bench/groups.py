#!/usr/bin/env python3
"""Consumer group benchmarks against a strom broker it starts itself (loopback only).

  failover   3 confluent-kafka consumers (each its own process) share a 6-partition topic
             that a producer feeds continuously; one consumer is killed with SIGKILL, and
             the time until each of its partitions is consumed again by another member is
             reported (bounded by session.timeout.ms, which is a parameter).
  heartbeat  N groups of M members (a small asyncio client speaking the classic protocol:
             JoinGroup, SyncGroup, then Heartbeat every --heartbeat-ms) stay Stable for
             --seconds; the broker's CPU time over that window is reported as % of a core.

Every run is bounded in time and stops the processes it started, by PID.
Example:  python bench/groups.py --scenarios failover,heartbeat
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CONSUMER = r"""
import sys, time
from confluent_kafka import Consumer
bs, topic, session_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bs, "group.id": "bench-failover",
              "session.timeout.ms": session_ms, "heartbeat.interval.ms": 1000,
              "auto.offset.reset": "latest"})
c.subscribe([topic])
deadline = time.time() + 600
while time.time() < deadline:
    m = c.poll(0.1)
    if m is not None and not m.error():
        print(f"{m.partition()} {time.time():.3f}", flush=True)
"""


def log(msg: str) -> None:
    print(f"[groups {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, overrides: list[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="strom-bench-groups-")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "strom", "server",
                "--override", f"listeners=PLAINTEXT://{self.bootstrap}",
                "--override", f"log.dirs={self.dir}/data"]
        for o in overrides:
            args += ["--override", o]
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit("strom did not start")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        subprocess.run(["rm", "-rf", self.dir], check=False)


# --- failover -------------------------------------------------------------------------------
def scenario_failover(args) -> dict:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    broker = Broker(["group.initial.rebalance.delay.ms=0"])
    procs: list[subprocess.Popen] = []
    try:
        topic = "bench-failover"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(15)
        for _ in range(3):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CONSUMER, broker.bootstrap, topic,
                 str(args.session_ms)], stdout=subprocess.PIPE, text=True))
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        owners: dict[int, int] = {}
        last_seen: dict[int, float] = {}

        def pump(seconds: float) -> None:
            end = time.time() + seconds
            while time.time() < end:
                for p in range(6):
                    producer.produce(topic, b"x", partition=p)
                producer.poll(0)
                for i, proc in enumerate(procs):
                    if proc.poll() is not None:
                        continue
                    os.set_blocking(proc.stdout.fileno(), False)
                    for line in proc.stdout.readlines():
                        part, ts = line.split()
                        owners[int(part)] = i
                        last_seen[int(part)] = float(ts)
                time.sleep(0.02)

        pump(20)
        if len(set(owners.values())) < 3:
            log(f"not every member owns partitions yet: {owners}")
        victim = owners.get(0, 0)
        victim_parts = sorted(p for p, o in owners.items() if o == victim)
        killed_at = time.time()
        procs[victim].kill()
        log(f"killed member {victim} owning partitions {victim_parts}")
        before = {p: last_seen.get(p, 0) for p in victim_parts}
        deadline = killed_at + args.session_ms / 1000 + 60
        resumed: dict[int, float] = {}
        while time.time() < deadline and len(resumed) < len(victim_parts):
            pump(0.2)
            for p in victim_parts:
                if p not in resumed and owners.get(p) != victim and \
                        last_seen.get(p, 0) > max(before[p], killed_at):
                    resumed[p] = last_seen[p] - killed_at
        return {"scenario": "failover", "session_timeout_ms": args.session_ms,
                "partitions_moved": len(victim_parts),
                "resumed_s": {str(p): round(s, 2) for p, s in sorted(resumed.items())},
                "max_resume_s": round(max(resumed.values()), 2) if resumed else None,
                "ok": len(resumed) == len(victim_parts)}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        broker.stop()


# --- heartbeat load ---------------------------------------------------------------------------
def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _bytes(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b


class Member:
    """A minimal classic-protocol member: JoinGroup v5, SyncGroup v3, Heartbeat v3."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.host, port = bootstrap.split(":")
        self.port = int(port)
        self.group, self.topic = group, topic
        self.member_id = ""
        self.generation = -1
        self.cid = 0

    async def call(self, key: int, version: int, body: bytes) -> bytes:
        self.cid += 1
        header = struct.pack(">hhi", key, version, self.cid) + _str("bench")
        frame = header + body
        self.writer.write(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", await self.reader.readexactly(4))[0]
        return (await self.reader.readexactly(size))[4:]  # drop the correlation id

    async def join(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        for _ in range(100):  # FindCoordinator v1 (creates __consumer_offsets on first use)
            r = await self.call(10, 1, _str(self.group) + struct.pack(">b", 0))
            if struct.unpack_from(">h", r, 4)[0] == 0:
                break
            await asyncio.sleep(0.1)
        meta = struct.pack(">h", 0) + struct.pack(">i", 1) + _str(self.topic) + _bytes(b"")
        while True:
            body = (_str(self.group) + struct.pack(">ii", 30000, 60000) + _str(self.member_id)
                    + struct.pack(">h", -1) + _str("consumer") + struct.pack(">i", 1)
                    + _str("range") + _bytes(meta))
            r = await self.call(11, 5, body)
            error = struct.unpack_from(">h", r, 4)[0]
            gen = struct.unpack_from(">i", r, 6)[0]
            pos = 10
            n = struct.unpack_from(">h", r, pos)[0]
            pos += 2 + n  # protocol name
            n = struct.unpack_from(">h", r, pos)[0]
            leader = r[pos + 2:pos + 2 + n].decode()
            pos += 2 + n
            n = struct.unpack_from(">h", r, pos)[0]
            self.member_id = r[pos + 2:pos + 2 + n].decode()
            if error == 79:  # MEMBER_ID_REQUIRED
                continue
            if error:
                raise RuntimeError(f"JoinGroup error {error}")
            self.generation = gen
            break
        del leader  # the leader assigns nothing: every member gets an empty assignment
        assignments = struct.pack(">i", 0)
        body = (_str(self.group) + struct.pack(">i", self.generation) + _str(self.member_id)
                + struct.pack(">h", -1) + assignments)
        r = await self.call(14, 3, body)
        error = struct.unpack_from(">h", r, 4)[0]
        if error not in (0, 27):  # 27: rebalance in progress, rejoin
            raise RuntimeError(f"SyncGroup error {error}")
        if error == 27:
            await self.join_again()

    async def join_again(self) -> None:
        self.writer.close()
        await self.join()

    async def run_until(self, deadline: float, interval: float) -> tuple[int, int]:
        """Join, then heartbeat every `interval` until `deadline`, rejoining when told to.
        Returns (heartbeats, rejoins)."""
        await self.join()
        beats = rejoins = 0
        while time.time() < deadline:
            await asyncio.sleep(interval)
            body = (_str(self.group) + struct.pack(">i", self.generation) + _str(self.member_id)
                    + struct.pack(">h", -1))
            r = await self.call(12, 3, body)
            error = struct.unpack_from(">h", r, 4)[0]
            beats += 1
            if error in (25, 27):  # UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS: join again
                if error == 25:
                    self.member_id = ""
                rejoins += 1
                await self.join_again()
            elif error:
                raise RuntimeError(f"Heartbeat error {error}")
        self.writer.close()
        return beats, rejoins


def scenario_heartbeat(args) -> dict:
    broker = Broker([])  # Kafka's default initial rebalance delay: each group forms once
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("bench-hb", 3, 1)])["bench-hb"].result(15)

        async def run() -> tuple[float, int, int]:
            members = [Member(broker.bootstrap, f"bench-hb-{g}", "bench-hb")
                       for g in range(args.groups) for _ in range(args.members)]
            end = time.time() + args.warmup + args.seconds
            tasks = [asyncio.ensure_future(m.run_until(end, args.heartbeat_ms / 1000))
                     for m in members]
            await asyncio.sleep(args.warmup)  # every group forms and settles
            cpu0, t0 = broker.cpu_seconds(), time.time()
            results = await asyncio.gather(*tasks)
            share = (broker.cpu_seconds() - cpu0) / (time.time() - t0)
            return share, sum(b for b, _ in results), sum(r for _, r in results)

        cpu_share, beats, rejoins = asyncio.run(asyncio.wait_for(
            run(), args.warmup + args.seconds + 120))
        return {"scenario": "heartbeat", "groups": args.groups, "members": args.members,
                "heartbeat_ms": args.heartbeat_ms, "seconds": args.seconds,
                "heartbeats": beats, "rejoins": rejoins,
                "broker_cpu_pct_of_core": round(cpu_share * 100, 2), "ok": True}
    finally:
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="failover,heartbeat")
    ap.add_argument("--session-ms", type=int, default=10000,
                    help="consumers' session.timeout.ms in the failover scenario")
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--heartbeat-ms", type=int, default=3000,
                    help="heartbeat interval (the Java client's default is 3000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="seconds for the groups to form before measuring")
    args = ap.parse_args()
    for name in args.scenarios.split(","):
        fn = {"failover": scenario_failover, "heartbeat": scenario_heartbeat}[name.strip()]
        log(f"running {name}")
        print(json.dumps(fn(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
