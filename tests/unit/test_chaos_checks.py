"""The chaos suite's own parts that need no cluster: the transactional checker finds each
kind of problem it claims to, a schedule names the peer of a partition-brokers fault, and
a TcpProxy holds only the blocked origin's connections, or one direction only."""

from __future__ import annotations

import socket
import threading

from strom.testing.chaos_txn import judge
from strom.testing.nemesis import FAULT_KINDS, ZK_DIRECTIONS, schedule
from strom.testing.zookeeper import TcpProxy

ACKED = [(0, 0, 0), (0, 1, 3), (1, 0, 1), (1, 1, 4)]
SIZES = {"t0": 2, "t1": 2, "t2": 2}


def out(p: int, o: int, seq: int, txn: str) -> bytes:
    return b"%d:%d:%d:%s" % (p, o, seq, txn.encode())


def good() -> tuple[list[bytes], dict[str, str]]:
    values = [out(0, 0, 0, "t0"), out(1, 0, 1, "t0"), out(0, 1, 3, "t2"), out(1, 1, 4, "t2")]
    return values, {"t0": "committed", "t1": "aborted", "t2": "committed"}


def test_a_clean_history_passes():
    values, outcomes = good()
    assert judge(values, outcomes, SIZES, {0: 2, 1: 2}, ACKED, 2) == []


def test_each_violation_is_found():
    values, outcomes = good()
    # a record of the aborted transaction visible
    assert any("aborted transaction t1" in p for p in judge(
        values + [out(0, 1, 3, "t1")], outcomes, SIZES, {0: 2, 1: 2}, ACKED, 2))
    # half of a committed transaction
    found = judge(values[1:], outcomes, SIZES, {0: 2, 1: 2}, ACKED, 2)
    assert any("committed transaction t0: 1 of 2" in p for p in found)
    assert any("never transformed" in p for p in found)
    # the group committed past what the output holds, and below it
    assert any("group committed 1" in p for p in judge(values, outcomes, SIZES, {0: 1, 1: 2},
                                                        ACKED, 2))
    # an input transformed from a value it was not acknowledged with
    bad = [out(0, 0, 9, "t0")] + values[1:]
    assert any("transformed from" in p for p in judge(bad, outcomes, SIZES, {0: 2, 1: 2},
                                                       ACKED, 2))


def test_schedule_names_a_different_peer_for_partition_brokers():
    faults = schedule(1, 3 * len(FAULT_KINDS), FAULT_KINDS, [1, 2, 3], [1, 2, 3])
    cuts = [f for f in faults if f.kind == "partition-brokers"]
    assert len(cuts) == 3
    assert all(f.peer in (1, 2, 3) and f.peer != f.target for f in cuts)
    assert faults == schedule(1, 3 * len(FAULT_KINDS), FAULT_KINDS, [1, 2, 3], [1, 2, 3])
    one_way = [f for f in faults if f.kind == "one-way-brokers"]
    assert len(one_way) == 3 and all(f.peer not in (None, f.target) for f in one_way)
    to_zk = [f for f in faults if f.kind == "one-way-zk"]
    assert len(to_zk) == 3 and all(f.direction in ZK_DIRECTIONS for f in to_zk)


def test_proxy_blocks_only_the_chosen_origin():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(
                lambda: c.recv(100), b"")], daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    marked: dict[int, str] = {}
    proxy = TcpProxy(port, origin=lambda client_port: marked.get(client_port)).start()
    try:
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        marked[a.getsockname()[1]] = "a"
        a.connect(("127.0.0.1", proxy.port))
        b = socket.create_connection(("127.0.0.1", proxy.port))
        for s in (a, b):
            s.settimeout(5)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        proxy.block("a")
        a.settimeout(1)
        a.sendall(b"y")
        b.sendall(b"z")
        assert b.recv(1) == b"z"
        try:
            got = a.recv(1)
        except TimeoutError:
            got = None
        assert got is None
        proxy.unblock("a")
        a.settimeout(5)
        assert a.recv(1) == b"y"
        a.close()
        b.close()
    finally:
        proxy.close()
        server.close()


def test_proxy_stalls_one_direction_only():
    """`stall(DOWNSTREAM)`: the server gets every byte the client sends, its answers wait
    in the proxy and arrive, in order, after `unstall`; `stall(UPSTREAM, who)` holds only
    `who`'s requests, while the answers already sent still reach it."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received: list[bytes] = []

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def serve(c=conn) -> None:
                for d in iter(lambda: c.recv(100), b""):
                    received.append(d)
                    c.sendall(d)

            threading.Thread(target=serve, daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    marked: dict[int, str] = {}
    proxy = TcpProxy(port, origin=lambda client_port: marked.get(client_port)).start()
    try:
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        marked[a.getsockname()[1]] = "a"
        a.connect(("127.0.0.1", proxy.port))
        b = socket.create_connection(("127.0.0.1", proxy.port))
        for s in (a, b):
            s.settimeout(5)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        received.clear()

        proxy.stall(TcpProxy.DOWNSTREAM)
        a.settimeout(1)
        a.sendall(b"1")
        a.sendall(b"2")
        wait = threading.Event()
        for _ in range(50):
            if b"".join(received) == b"12":
                break
            wait.wait(0.1)
        assert b"".join(received) == b"12"  # the requests got through
        try:
            got = a.recv(2)
        except TimeoutError:
            got = None
        assert got is None  # ... the answers did not
        proxy.unstall(TcpProxy.DOWNSTREAM)
        a.settimeout(5)
        got = a.recv(2)
        got += a.recv(2) if len(got) < 2 else b""
        assert got == b"12"  # ... until now, in order

        received.clear()
        proxy.stall(TcpProxy.UPSTREAM, "a")
        a.sendall(b"3")
        b.sendall(b"z")
        assert b.recv(1) == b"z"  # another client's connection is not held
        wait.wait(0.5)
        assert received == [b"z"]
        proxy.restore()
        assert a.recv(1) == b"3"
        a.close()
        b.close()
    finally:
        proxy.close()
        server.close()
