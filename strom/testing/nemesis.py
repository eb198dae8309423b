"""Faults for the chaos suite (tests/chaos, bench/chaos.py): what a data centre does to a
cluster, injected on loopback, one at a time, each with its own way back.

    nemesis = Nemesis(cluster, ensemble, links, disks)
    for fault in schedule(seed=7, count=6, kinds=FAULT_KINDS, brokers=[1, 2, 3]):
        nemesis.inject(fault)          # e.g. pause broker 2 for 6 s
        time.sleep(fault.seconds)
        nemesis.heal()                 # undo it (restart, SIGCONT, reconnect, free space)

Faults (`FAULT_KINDS`):
- `kill-broker`  kill -9 of a broker; healed by starting it again on the same data.
- `pause-broker` SIGSTOP of a broker (longer than its ZooKeeper session when the schedule
                 says so); healed by SIGCONT. A paused leader that wakes must not take
                 writes it can no longer replicate.
- `kill-zk`      kill -9 of one ZooKeeper member (the quorum goes on); healed by a restart.
- `zk-partition` the broker loses every connection to ZooKeeper (its `ZkLink` proxies are
                 cut) while it still talks to clients and other brokers: its session
                 expires, the controller moves its leaderships; healed by reconnecting.
- `isolate-broker` nothing reaches the broker through its advertised address any more
                 (a `TcpProxy` in front of its listener, on hold: packets dropped, so
                 peers and clients see timeouts); its followers cannot fetch from it, so as
                 a leader it shrinks its ISR to itself and can acknowledge nothing with
                 min.insync.replicas=2. It still reaches ZooKeeper and the other brokers.
                 Healed by letting the traffic through again.
- `partition-brokers` the link between two chosen brokers is cut both ways: neither's
                 connections to the other's advertised address pass data any more (follower
                 fetches, the controller's requests, transaction markers), while both still
                 reach ZooKeeper, clients and the other brokers. Each broker's `TcpProxy`
                 tells who connected (the broker process owning the client socket, read
                 from /proc) and holds only that one's connections. Healed by letting them
                 through again.
- `one-way-brokers` what `target` sends to `peer` is lost, what `peer` sends to `target`
                 arrives: on target's connections to peer the requests wait (peer never
                 sees them), on peer's connections to target the answers wait (target
                 handles peer's requests, follower fetches included, but peer never hears
                 back), as when IP packets one way are dropped and TCP retransmits them.
                 Healed by letting the waiting bytes through, in order.
- `one-way-zk`   one direction between a broker and every ZooKeeper member: `to-zk` (what
                 the broker sends never arrives: its session expires as in zk-partition,
                 but its connections stay open) or `from-zk` (ZooKeeper gets the broker's
                 requests and pings, so its session lives on and its writes are applied,
                 but the broker hears nothing back: it cannot tell whether a write of
                 its own was). Healed by letting the waiting bytes through.
- `full-disk`    the broker's log dir (a small tmpfs of its own, `SmallDisk`) is filled to
                 the last byte: its next append fails, the dir goes offline and the broker,
                 with no dir left, stops (KIP-112); healed by deleting the filler file and
                 starting the broker again.

Network partitions use `TcpProxy` (strom.testing.zookeeper) rather than network namespaces:
those need privileges and tools a test machine often lacks, while a proxy gives the same
failure to both sides. A broker has one advertised address, so `isolate-broker` cuts what
comes in to it from every peer and client at once, and `partition-brokers` tells one peer's
connections from the others' by the process that owns them. A one-way cut holds one
direction of a connection in the proxy (`TcpProxy.stall`) while the other passes.

A schedule is a pure function of its seed, so the seed printed with a failure reproduces the
same faults in the same order.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from strom.testing.cluster import Cluster
from strom.testing.zookeeper import TcpProxy, ZooKeeperEnsemble

__all__ = ["FAULT_KINDS", "ZK_DIRECTIONS", "ChaosCluster", "Fault", "Nemesis", "SmallDisk", "ZkLink", "schedule"]

FAULT_KINDS = ("kill-broker", "pause-broker", "kill-zk", "zk-partition", "isolate-broker",
               "partition-brokers", "one-way-brokers", "one-way-zk", "full-disk")
ZK_DIRECTIONS = ("to-zk", "from-zk")  # of a one-way-zk: which way the bytes are lost


@dataclass(frozen=True)
class Fault:
    """One fault of a schedule: `kind` applied to `target` (a broker id, or a ZooKeeper
    member id for kill-zk) for `seconds`; `peer` is the other broker of a
    partition-brokers or one-way-brokers (whose lost direction is target -> peer);
    `direction` is a one-way-zk's (ZK_DIRECTIONS)."""

    kind: str
    target: int
    seconds: float
    peer: int | None = None
    direction: str | None = None

    def __str__(self) -> str:
        if self.kind == "one-way-brokers":
            target = f"{self.target}->{self.peer}"
        elif self.direction is not None:
            target = f"{self.target} {self.direction}"
        else:
            target = self.target if self.peer is None else f"{self.target}|{self.peer}"
        return f"{self.kind}({target}, {self.seconds:.1f}s)"


def schedule(seed: int, count: int, kinds: tuple[str, ...], brokers: list[int],
             zk_members: list[int] | None = None, min_s: float = 2.0, max_s: float = 8.0
             ) -> list[Fault]:
    """`count` faults drawn from `kinds` by a `random.Random(seed)`. Every kind comes once
    before any comes twice (so a short schedule has one of each), in a seeded order."""
    rng = random.Random(seed)
    out: list[Fault] = []
    pool: list[str] = []
    for _ in range(count):
        if not pool:
            pool = list(kinds)
            rng.shuffle(pool)
        kind = pool.pop()
        targets = zk_members if kind == "kill-zk" and zk_members else brokers
        target = rng.choice(targets)
        peer = direction = None
        if kind in ("partition-brokers", "one-way-brokers"):
            peer = rng.choice([b for b in brokers if b != target])
        elif kind == "one-way-zk":
            direction = rng.choice(ZK_DIRECTIONS)
        out.append(Fault(kind, target, round(rng.uniform(min_s, max_s), 1), peer, direction))
    return out


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the connected sockets whose local port is `port` (Linux /proc)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] != "0A" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _owns(pid: int, inodes: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


class ZkLink:
    """One broker's connections to ZooKeeper, through a `TcpProxy` per ensemble member.
    `connect_string(chroot)` is the broker's `zookeeper.connect`; `cut()` partitions the
    broker from the whole ensemble, `restore()` heals."""

    def __init__(self, ensemble: ZooKeeperEnsemble) -> None:
        self.proxies = [TcpProxy(m.port).start() for m in ensemble.members.values()]

    def connect_string(self, chroot: str) -> str:
        return ",".join(p.connect_string for p in self.proxies) + chroot

    def cut(self) -> None:
        for p in self.proxies:
            p.cut()

    def stall(self, direction: str) -> None:
        """One way only: `to-zk` holds what the broker sends, `from-zk` what it gets."""
        for p in self.proxies:
            p.stall(TcpProxy.UPSTREAM if direction == "to-zk" else TcpProxy.DOWNSTREAM)

    def restore(self) -> None:
        for p in self.proxies:
            p.restore()

    def close(self) -> None:
        for p in self.proxies:
            p.close()


class SmallDisk:
    """A tmpfs of `size_bytes` mounted on a temp dir of its own, to be a broker's log dir
    that can run full. Needs the right to mount (root, or CAP_SYS_ADMIN):
    `SmallDisk.available()` says whether this machine gives it. `fill()` writes a filler
    file until ENOSPC; `free()` deletes it. `close()` unmounts and removes the dir."""

    FILLER = ".nemesis-filler"

    def __init__(self, size_bytes: int = 8 << 20) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="strom-disk-"))
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                            str(self.path)], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            self.path.rmdir()
            raise
        self.mounted = True
        atexit.register(self.close)  # a test that dies leaves no mount behind

    @staticmethod
    def available() -> bool:
        try:
            SmallDisk(1 << 20).close()
            return True
        except (OSError, subprocess.SubprocessError):
            return False

    def fill(self) -> int:
        """Write zeros until the file system is full; returns the bytes written."""
        written = 0
        chunk = bytes(64 << 10)
        with open(self.path / self.FILLER, "ab", buffering=0) as f:
            while True:
                try:
                    n = f.write(chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    # fill the last bytes too, a block at a time
                    if len(chunk) > 512:
                        chunk = chunk[:len(chunk) // 2]
                        continue
                    return written
                written += n or 0

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / self.FILLER)

    def close(self) -> None:
        atexit.unregister(self.close)
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False
        with contextlib.suppress(OSError):
            self.path.rmdir()


class Nemesis:
    """Injects one `Fault` at a time into a `Cluster` on a `ZooKeeperEnsemble` and heals it.
    `links` (broker id -> ZkLink) enable zk-partition, `disks` (broker id -> SmallDisk, the
    broker's log dir) enable full-disk. `history` lists what was done, for the run's
    history file."""

    def __init__(self, cluster: Cluster, ensemble: ZooKeeperEnsemble | None = None,
                 links: dict[int, ZkLink] | None = None,
                 disks: dict[int, SmallDisk] | None = None,
                 fronts: dict[int, TcpProxy] | None = None) -> None:
        self.cluster = cluster
        self.ensemble = ensemble
        self.links = links or {}
        self.disks = disks or {}
        self.fronts = fronts or {}  # broker id -> the proxy of its advertised listener
        self.current: Fault | None = None
        self.history: list[str] = []

    def supports(self, kind: str) -> bool:
        return {"kill-zk": self.ensemble is not None, "zk-partition": bool(self.links),
                "one-way-zk": bool(self.links),
                "full-disk": bool(self.disks),
                "isolate-broker": bool(self.fronts),
                "partition-brokers": len(self.fronts) > 1,
                "one-way-brokers": len(self.fronts) > 1}.get(kind, True)

    def inject(self, fault: Fault) -> None:
        assert self.current is None, f"{self.current} is not healed yet"
        c, n = self.cluster, fault.target
        if fault.kind == "kill-broker":
            c.kill(n)
        elif fault.kind == "pause-broker":
            c.pause(n)
        elif fault.kind == "kill-zk":
            assert self.ensemble is not None
            self.ensemble.kill(n)
        elif fault.kind == "zk-partition":
            self.links[n].cut()
        elif fault.kind == "isolate-broker":
            self.fronts[n].hold()
            c.unreachable.add(n)
        elif fault.kind == "partition-brokers":
            assert fault.peer is not None
            self.fronts[n].block(fault.peer)
            self.fronts[fault.peer].block(n)
        elif fault.kind == "one-way-brokers":
            assert fault.peer is not None
            # n's requests to peer wait, and so do n's answers to peer's requests
            self.fronts[fault.peer].stall(TcpProxy.UPSTREAM, n)
            self.fronts[n].stall(TcpProxy.DOWNSTREAM, fault.peer)
        elif fault.kind == "one-way-zk":
            assert fault.direction in ZK_DIRECTIONS
            self.links[n].stall(fault.direction)
        elif fault.kind == "full-disk":
            self.disks[n].fill()
        else:
            raise ValueError(f"unknown fault {fault.kind}")
        self.current = fault
        self.history.append(f"inject {fault}")

    def heal(self) -> None:
        fault, self.current = self.current, None
        if fault is None:
            return
        c, n = self.cluster, fault.target
        if fault.kind == "kill-broker":
            c.brokers[n].start()
        elif fault.kind == "pause-broker":
            c.resume(n)
        elif fault.kind == "kill-zk":
            assert self.ensemble is not None
            self.ensemble.start_member(n)
            self.ensemble.wait_for_quorum()
        elif fault.kind == "zk-partition":
            self.links[n].restore()
        elif fault.kind == "isolate-broker":
            self.fronts[n].restore()
            c.unreachable.discard(n)
        elif fault.kind == "partition-brokers":
            assert fault.peer is not None
            self.fronts[n].unblock(fault.peer)
            self.fronts[fault.peer].unblock(n)
        elif fault.kind == "one-way-brokers":
            assert fault.peer is not None
            self.fronts[fault.peer].unstall(TcpProxy.UPSTREAM, n)
            self.fronts[n].unstall(TcpProxy.DOWNSTREAM, fault.peer)
        elif fault.kind == "one-way-zk":
            self.links[n].restore()
        elif fault.kind == "full-disk":
            self.disks[n].free()
            if not c.brokers[n].is_alive():  # its only log dir went offline: it stopped
                c.brokers[n].start()
        self.history.append(f"heal {fault}")


class ChaosCluster:
    """A `Cluster` on a `ZooKeeperEnsemble` wired for every fault: each broker reaches
    ZooKeeper through its own `ZkLink`, and (when this machine lets us mount) keeps its log
    dir on a `SmallDisk` of `disk_bytes`. `nemesis` injects the faults.

        with ZooKeeperEnsemble() as zk, ChaosCluster(zk, size=3) as chaos:
            chaos.cluster.create_topic(...)
            chaos.nemesis.inject(Fault("zk-partition", 2, 6.0)) ...
    """

    def __init__(self, ensemble: ZooKeeperEnsemble, size: int = 3,
                 overrides: dict | None = None, session_timeout_ms: int = 4000,
                 disk_bytes: int = 64 << 20, disks: bool = True) -> None:
        self.cluster = Cluster(ensemble.connect_string, 0, overrides,
                               session_timeout_ms=session_timeout_ms)
        self.links: dict[int, ZkLink] = {}
        self.disks: dict[int, SmallDisk] = {}
        self.fronts: dict[int, TcpProxy] = {}
        mount = disks and SmallDisk.available()
        try:
            for n in range(1, size + 1):
                self.links[n] = ZkLink(ensemble)
                log_dir = None
                if mount:
                    self.disks[n] = SmallDisk(disk_bytes)
                    log_dir = self.disks[n].path / "data"
                b = self.cluster.add_broker(n, start=False, log_dir=log_dir, overrides={
                    "zookeeper.connect": self.links[n].connect_string(self.cluster.chroot)})
                # peers and clients reach it through a proxy (bootstrap aside)
                self.fronts[n] = TcpProxy(b.port, origin=self._broker_at).start()
                b.overrides["advertised.listeners"] = \
                    f"PLAINTEXT://{self.fronts[n].connect_string}"
        except BaseException:
            self.close()
            raise
        self.nemesis = Nemesis(self.cluster, ensemble, self.links, self.disks, self.fronts)

    def _broker_at(self, port: int) -> int | None:
        """The broker whose process owns the client socket on 127.0.0.1:`port`."""
        inodes = _socket_inodes(port)
        for n, b in self.cluster.brokers.items():
            if b.pid is not None and inodes and _owns(b.pid, inodes):
                return n
        return None

    def start(self) -> ChaosCluster:
        self.cluster.start()
        return self

    def close(self) -> None:
        self.cluster.close()
        for link in self.links.values():
            link.close()
        for front in self.fronts.values():
            front.close()
        for disk in self.disks.values():
            disk.close()

    def __enter__(self) -> ChaosCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
