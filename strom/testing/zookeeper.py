"""A real standalone ZooKeeper in a child process, for cluster tests.

`ZooKeeperProcess` runs Debian's ZooKeeper (package `zookeeper`: the jars in /usr/share/java)
straight from the JVM, without zkServer.sh or /etc/zookeeper:

    with ZooKeeperProcess() as zk:
        store = ZkMetadataStore(zk.connect_string + "/test-1")
        ...

- It writes its own zoo.cfg in a temp dir (data dir beside it): a free 127.0.0.1 port,
  tickTime=500 so sessions as short as 1 s are allowed (minSessionTimeout=1000, max 60000),
  no admin server, the `srvr`/`ruok`/`stat`/`mntr` four-letter words, forceSync=no (tests
  do not need fsync).
- `start()` waits, bounded by `startup_timeout`, until the server answers `srvr` as serving
  on a socket the process itself holds (so another program on the port is never taken for
  it); it raises `ZooKeeperStartError` with the server's log when the JVM exits or the
  deadline passes. A JVM start takes about 0.3 s.
- `kill()` is SIGKILL and keeps port and data: `start()` again resumes the same ensemble
  state (sessions included, as after a real crash). `stop()` is SIGTERM (SIGKILL after
  `stop_timeout`) and removes the temp dir; it is what `__exit__` does.
- Output goes to `zookeeper.log` in the temp dir; `log_text()` returns it.

`TcpProxy` forwards a local port to the server; `cut()` drops every connection through it
and refuses new ones until `restore()`: a network partition between one client and
ZooKeeper, the reliable way to make the server expire that client's session.

Every JVM this module starts is tracked by PID and SIGKILLed by an `atexit` hook if it is
still running when the interpreter exits; the same hook removes leftover temp dirs.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strom.testing.broker import _listens

# one registry of child processes and temp dirs for every harness: its atexit hook kills what
# is still running and removes the dirs
from strom.testing.processes import HOST, ChildProcess, end, free_port, keep_dir, remove_dir, track

__all__ = [
    "QuorumMember",
    "TcpProxy",
    "ZooKeeperEnsemble",
    "ZooKeeperProcess",
    "ZooKeeperStartError",
    "find_zookeeper",
]

_JAVA_DIR = Path("/usr/share/java")
_MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
_QUORUM_MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
# A small, quick-starting JVM: C1 only and the serial GC start in ~0.3 s instead of ~0.7 s.
_JVM_FLAGS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
              "-XX:-UsePerfData"]



def find_zookeeper() -> tuple[str, str] | None:
    """(java, classpath) for Debian's ZooKeeper, or None when it is not installed.

    zookeeper.jar's manifest names its dependencies (netty, jute, slf4j-api, ...); slf4j-simple
    is added when present so the server logs to stderr (our log file) instead of nowhere."""
    java = shutil.which("java") or ("/usr/bin/java" if os.access("/usr/bin/java", os.X_OK)
                                    else None)
    jar = _JAVA_DIR / "zookeeper.jar"
    if java is None or not jar.is_file():
        return None
    cp = [str(jar)]
    simple = _JAVA_DIR / "slf4j-simple.jar"
    if simple.is_file():
        cp.append(str(simple))
    return java, os.pathsep.join(cp)


class ZooKeeperStartError(RuntimeError):
    """ZooKeeper exited or did not serve in time; the message holds its log."""


def four_letter_word(port: int, word: bytes = b"srvr", timeout: float = 1.0) -> bytes:
    """Send a four-letter command to 127.0.0.1:`port`, return the whole reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(word)
        chunks = []
        while True:
            data = s.recv(4096)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


class ZooKeeperProcess(ChildProcess):
    """One standalone ZooKeeper server; see the module docstring."""

    what = "ZooKeeper"
    start_error = ZooKeeperStartError

    def __init__(self, *, port: int | None = None, tick_time_ms: int = 500,
                 min_session_timeout_ms: int = 1000, max_session_timeout_ms: int = 60000,
                 startup_timeout: float = 30.0, stop_timeout: float = 10.0,
                 quorum: QuorumMember | None = None) -> None:
        found = find_zookeeper()
        if found is None:
            raise FileNotFoundError(
                "ZooKeeper is not installed (need java and /usr/share/java/zookeeper.jar: "
                "apt-get install zookeeper)")
        self.java, self.classpath = found
        self._tmp = Path(tempfile.mkdtemp(prefix="strom-zk-"))
        keep_dir(self._tmp)
        self.data_dir = self._tmp / "data"
        self.data_dir.mkdir()
        self.config_path = self._tmp / "zoo.cfg"
        self.log_path = self._tmp / "zookeeper.log"
        self._port_chosen = port is None
        self.port = port if port is not None else free_port()
        self.tick_time_ms = tick_time_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.starts = 0
        self.startup_seconds: float | None = None  # how long the last start() took
        self._proc: subprocess.Popen | None = None
        self.quorum = quorum
        if quorum is not None:
            self._port_chosen = False  # the ensemble's ports are fixed in every member's cfg
            (self.data_dir / "myid").write_text(f"{quorum.my_id}\n")

    @property
    def connect_string(self) -> str:
        """`zookeeper.connect` for this server (append a chroot as needed)."""
        return f"{HOST}:{self.port}"

    def _write_config(self) -> None:
        self.config_path.write_text("\n".join([
            f"tickTime={self.tick_time_ms}",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            f"clientPortAddress={HOST}",
            f"minSessionTimeout={self.min_session_timeout_ms}",
            f"maxSessionTimeout={self.max_session_timeout_ms}",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,stat,mntr,cons",
            "forceSync=no",
            *(self.quorum.config_lines() if self.quorum is not None else ()),
            "",
        ]))

    def command(self) -> list[str]:
        main = _MAIN_CLASS if self.quorum is None else _QUORUM_MAIN_CLASS
        return [self.java, *_JVM_FLAGS, "-cp", self.classpath, main, str(self.config_path)]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _run_log(self) -> str:
        return self.log_text()

    def _start_once(self) -> None:
        self.starts += 1
        self._write_config()
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"=== strom.testing: start #{self.starts}: "
                      f"{' '.join(self.command())}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=str(self._tmp), start_new_session=True)
        self._proc = proc
        track(proc)
        deadline = began + self.startup_timeout
        while True:
            if proc.poll() is not None:
                self._reap()
                raise ZooKeeperStartError(
                    f"ZooKeeper exited with code {proc.returncode} before serving on "
                    f"{self.connect_string}; log:\n{self.log_text()}")
            try:
                reply = four_letter_word(self.port, b"srvr", 0.5)
            except OSError:
                reply = b""
            # a quorum member answers (not serving) until a majority has elected a leader:
            # its start ends when it answers; ZooKeeperEnsemble waits for the quorum
            serving = reply.startswith(b"Zookeeper version") or \
                (self.quorum is not None and bool(reply))
            if serving and _listens(proc.pid, self.port):
                self.startup_seconds = time.monotonic() - began
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise ZooKeeperStartError(
                    f"ZooKeeper did not serve on {self.connect_string} within "
                    f"{self.startup_timeout:.0f}s; log:\n{self.log_text()}")
            time.sleep(0.02)

    def serving(self) -> bool:
        """Whether the server answers clients now (a quorum member: part of a quorum)."""
        try:
            return four_letter_word(self.port, b"srvr", 0.5).startswith(b"Zookeeper version")
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the server holds its sockets but answers nothing."""
        if self.is_alive():
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.is_alive():
            os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (a crash); port, data and the temp dir stay for a later start()."""
        if self._proc is not None:
            end(self._proc, signal.SIGKILL, 10)
        self._reap()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `stop_timeout`) and remove its temp
        dir."""
        if self._proc is not None:
            end(self._proc, signal.SIGTERM, self.stop_timeout)
        self._reap()
        remove_dir(self._tmp)

    close = stop

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_alive() else "stopped"
        return f"<ZooKeeperProcess {self.connect_string} {state}>"


@dataclass(frozen=True)
class QuorumMember:
    """One server's place in an ensemble: its `myid` and every member's
    (id, peer port, election port, client port)."""

    my_id: int
    servers: tuple[tuple[int, int, int, int], ...]

    def config_lines(self) -> list[str]:
        # initLimit/syncLimit in ticks: a follower syncs within 5 s, drops after 2.5 s
        lines = ["initLimit=10", "syncLimit=5"]
        lines += [f"server.{i}={HOST}:{peer}:{election};{HOST}:{client}"
                  for i, peer, election, client in self.servers]
        return lines


class ZooKeeperEnsemble:
    """`size` (default 3) ZooKeeper servers forming one quorum on loopback ports:

        with ZooKeeperEnsemble() as zk:
            Cluster(zk.connect_string, 3)     # clients know every member
            zk.kill(1)                        # one down: the quorum goes on
            zk.kill(2)                        # majority down: nothing is served
            zk.start_member(1); zk.wait_for_quorum()

    Members are `ZooKeeperProcess`es (QuorumPeerMain, the same tickTime=500 settings), ids
    1..size; each keeps its ports and data across kill()/start_member(), as a real server
    after a crash."""

    def __init__(self, size: int = 3, startup_timeout: float = 60.0) -> None:
        ids = range(1, size + 1)
        servers = tuple((i, free_port(), free_port(), free_port()) for i in ids)
        self.startup_timeout = startup_timeout
        self.members: dict[int, ZooKeeperProcess] = {
            i: ZooKeeperProcess(port=client, startup_timeout=startup_timeout,
                                quorum=QuorumMember(i, servers))
            for i, _, _, client in servers}

    @property
    def connect_string(self) -> str:
        return ",".join(m.connect_string for m in self.members.values())

    def start(self) -> ZooKeeperEnsemble:
        errors: list[BaseException] = []

        def start(m: ZooKeeperProcess) -> None:
            try:
                m.start()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=start, args=(m,), daemon=True)
                   for m in self.members.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.close()
            raise errors[0]
        self.wait_for_quorum()
        return self

    def serving(self) -> list[int]:
        return [i for i, m in self.members.items() if m.is_alive() and m.serving()]

    def wait_for_quorum(self, timeout: float | None = None) -> None:
        """Wait until every running member serves (a quorum has a leader and they joined)."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            running = [i for i, m in self.members.items() if m.is_alive()]
            if len(running) * 2 > len(self.members) and set(self.serving()) == set(running):
                return
            if time.monotonic() >= deadline:
                logs = "\n".join(f"--- member {i}:\n{m.log_text()[-3000:]}"
                                 for i, m in self.members.items())
                raise ZooKeeperStartError(f"no ZooKeeper quorum of {running} serving in time;"
                                          f" logs:\n{logs}")
            time.sleep(0.1)

    def kill(self, member: int) -> None:
        self.members[member].kill()

    def start_member(self, member: int) -> None:
        """Start a killed member again (returns when it answers; it serves once it has
        joined a quorum: see wait_for_quorum)."""
        self.members[member].start()

    def close(self) -> None:
        for m in self.members.values():
            m.resume()
            m.stop()

    def __enter__(self) -> ZooKeeperEnsemble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_port`, with a switch to cut the line.

    `cut()` closes every connection through the proxy and makes it refuse new ones (accept,
    then close at once) until `restore()`. `hold()` is the quieter partition: nothing
    passes any more in either direction and new connections wait unanswered (in the listen
    backlog), so both sides see timeouts, as when packets are dropped; `restore()` lets the
    data through again. Used as a context manager or with start()/close(); one thread
    accepts, one thread per connection pumps both directions.

    With `origin` (the client's port -> who connected, e.g. which broker process, or None)
    `block(who)` holds only that one's connections, existing and new, as `hold()` holds
    all, until `unblock(who)` or `restore()`: a partition between two chosen peers.

    `stall(direction, who=EVERYONE)` is a one-way partition: the bytes of one direction
    (UPSTREAM: from whoever connected to the target; DOWNSTREAM: from the target back)
    wait in the kernel's buffers, as when IP packets that way are lost and TCP keeps
    retransmitting them, while the other direction passes: a server that gets requests
    but whose answers never arrive, or the reverse; `unstall` or `restore()` lets them
    through, in order. Each direction of a connection has its own thread, so one that
    waits never holds up the other."""

    UPSTREAM = "upstream"  # client -> target
    DOWNSTREAM = "downstream"  # target -> client
    EVERYONE = object()  # `stall` of every connection, whoever made it

    def __init__(self, target_port: int, target_host: str = HOST,
                 origin: Callable[[int], object] | None = None) -> None:
        self.target = (target_host, target_port)
        self._origin = origin
        self._blocked: set[object] = set()
        self._stalled: set[tuple[object, str]] = set()  # (who or EVERYONE, direction)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._held = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def connect_string(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"tcp-proxy-{self.port}")
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed:
            if self._held:
                time.sleep(0.05)
                continue
            try:
                client, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut or self._closed:
                client.close()
                continue
            who = self._origin(address[1]) if self._origin is not None else None
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst, direction in ((client, upstream, self.UPSTREAM),
                                        (upstream, client, self.DOWNSTREAM)):
                threading.Thread(target=self._pump, args=(src, dst, direction, who),
                                 daemon=True).start()

    def _passes(self, direction: str, who: object) -> bool:
        if self._held or (who is not None and who in self._blocked):
            return False
        return (self.EVERYONE, direction) not in self._stalled and \
            (who is None or (who, direction) not in self._stalled)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str,
              who: object = None) -> None:
        """Copy `src` to `dst` while this direction passes; at the end of either, both
        sockets close (which ends the other direction's thread too)."""
        try:
            while not self._closed:
                if not self._passes(direction, who):
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.2)
                if readable and self._passes(direction, who):  # (it may have changed)
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def _drop_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until restore()."""
        self._cut = True
        self._drop_all()

    def hold(self) -> None:
        """Let nothing through (existing or new connections) until restore()."""
        self._held = True

    def block(self, who: object) -> None:
        """Let nothing through on `who`'s connections (see `origin`) until unblock()."""
        self._blocked.add(who)

    def unblock(self, who: object) -> None:
        self._blocked.discard(who)

    def stall(self, direction: str, who: object = EVERYONE) -> None:
        """Let the bytes of `direction` (UPSTREAM, DOWNSTREAM) wait, on `who`'s
        connections (see `origin`) or everyone's, until unstall() or restore()."""
        assert direction in (self.UPSTREAM, self.DOWNSTREAM), direction
        self._stalled.add((who, direction))

    def unstall(self, direction: str, who: object = EVERYONE) -> None:
        self._stalled.discard((who, direction))

    def restore(self) -> None:
        self._cut = False
        self._held = False
        self._blocked.clear()
        self._stalled.clear()

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        self._drop_all()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
