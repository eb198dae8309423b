"""The chaos suite's own parts that need no cluster: the transactional checker finds each
kind of problem it claims to, a schedule names the peer of a partition-brokers fault, and
a TcpProxy holds only the blocked origin's connections, or one direction only."""

from __future__ import annotations

import socket
import threading

import pytest

from strom.testing.chaos_txn import judge
from strom.testing.cluster import wait_until
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


def test_an_acknowledgement_without_an_offset_is_matched_by_its_value():
    values, outcomes = good()
    acked = ACKED + [(1, None, 4)]  # seq 4 again, acknowledged without its offset
    assert judge(values, outcomes, SIZES, {0: 2, 1: 2}, acked, 2) == []
    missing = judge(values, outcomes, SIZES, {0: 2, 1: 2}, ACKED + [(1, None, 7)], 2)
    assert missing == ["1 acknowledged inputs never transformed: ['p1@None']"]


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


class EchoBehindProxy:
    """An echo server (which records what it gets) behind a TcpProxy, with two clients
    connected through it: `a` (known to the proxy's `origin` as "a") and `b` (unknown)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.received: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()
        marked: dict[int, str] = {}
        self.proxy = TcpProxy(self.server.getsockname()[1],
                              origin=lambda client_port: marked.get(client_port)).start()
        self.a = socket.socket()
        self.a.bind(("127.0.0.1", 0))
        marked[self.a.getsockname()[1]] = "a"
        self.a.connect(("127.0.0.1", self.proxy.port))
        self.b = socket.create_connection(("127.0.0.1", self.proxy.port))
        for s in (self.a, self.b):
            s.settimeout(5)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        self.received.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        for data in iter(lambda: conn.recv(100), b""):
            self.received.append(data)
            conn.sendall(data)

    def close(self) -> None:
        for s in (self.a, self.b):
            s.close()
        self.proxy.close()
        self.server.close()


@pytest.fixture
def echo():
    e = EchoBehindProxy()
    yield e
    e.close()


def nothing_within(sock: socket.socket, seconds: float) -> bool:
    """True when nothing (neither data nor the end of the stream) arrives in time."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
        return False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)


def test_proxy_blocks_only_the_chosen_origin(echo):
    echo.proxy.block("a")
    echo.a.sendall(b"y")
    echo.b.sendall(b"z")
    assert echo.b.recv(1) == b"z"
    assert nothing_within(echo.a, 1)
    echo.proxy.unblock("a")
    assert echo.a.recv(1) == b"y"


def test_proxy_stalls_one_direction_only(echo):
    """`stall(DOWNSTREAM)`: the server gets every byte the client sends, its answers wait
    in the proxy and arrive, in order, after `unstall`; `stall(UPSTREAM, who)` holds only
    `who`'s requests."""
    echo.proxy.stall(TcpProxy.DOWNSTREAM)
    echo.a.sendall(b"1")
    echo.a.sendall(b"2")
    wait_until(lambda: b"".join(echo.received) == b"12", 5, what="the requests to arrive")
    assert nothing_within(echo.a, 1)  # ... but not the answers
    echo.proxy.unstall(TcpProxy.DOWNSTREAM)
    got = echo.a.recv(2)
    got += echo.a.recv(2) if len(got) < 2 else b""
    assert got == b"12"  # ... until now, in order

    echo.received.clear()
    echo.proxy.stall(TcpProxy.UPSTREAM, "a")
    echo.a.sendall(b"3")
    echo.b.sendall(b"z")
    assert echo.b.recv(1) == b"z"  # another client's connection is not held
    assert nothing_within(echo.a, 0.5) and echo.received == [b"z"]
    echo.proxy.restore()
    assert echo.a.recv(1) == b"3"
