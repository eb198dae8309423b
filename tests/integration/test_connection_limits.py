"""Idle and abusive connections against a real broker, on raw sockets (issue 10, defect 7):
connections.max.idle.ms, max.connections.per.ip (and its overrides), max.connections and
queued.max.request.bytes, with Kafka's names; bad values are a one-line start-up error.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from strom.testing.broker import BrokerProcess, BrokerStartError, free_port
from strom.testing.kafka import create_topic
from strom.testing.wire import (
    Closed,
    KafkaSocket,
    api_versions_v0,
    fetch_v4,
    parse_api_versions_v0,
    parse_fetch_v4,
)

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"


def answers(sock: KafkaSocket, cid: int) -> bool:
    """True if ApiVersions is answered on `sock`, False if the broker closed it."""
    try:
        resp = parse_api_versions_v0(sock.roundtrip(api_versions_v0(cid)))
    except Closed:
        return False
    assert (resp.correlation_id, resp.error_code) == (cid, 0)
    return True


def served_connection(port: int, timeout: float = 15) -> KafkaSocket:
    """A connection that answers: retried while the broker still counts a connection that
    was just closed (it notices the close asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = KafkaSocket(HOST, port)
        if answers(sock, 1):
            return sock
        sock.close()
        assert time.monotonic() < deadline, "no connection slot came free"
        time.sleep(0.05)


def test_an_idle_connection_is_closed_but_not_one_with_a_parked_fetch(start_broker,
                                                                     topic_name):
    b = start_broker({"connections.max.idle.ms": "1000"})
    create_topic(b.bootstrap, topic_name, 1)
    with KafkaSocket(HOST, b.port) as fetching, KafkaSocket(HOST, b.port) as idle:
        assert answers(idle, 7)
        # parked for 2.5 s, longer than the idle time: a request in progress is not idle
        fetching.send(fetch_v4(topic_name, 0, 0, max_wait_ms=2500, correlation_id=9))
        assert idle.wait_closed(timeout=20)
        cid, parts = parse_fetch_v4(fetching.recv_frame())
        assert cid == 9 and parts[0].error_code == 0
        assert answers(fetching, 10)  # still open after its answer
        assert fetching.wait_closed(timeout=20)  # and closed once idle
    assert "Traceback" not in b.log_text()


def test_max_connections_per_ip_closes_the_next_connection_until_one_ends(start_broker):
    b = start_broker({"max.connections.per.ip": "2"})
    first = served_connection(b.port)
    second = served_connection(b.port)
    third = KafkaSocket(HOST, b.port)
    assert third.wait_closed(timeout=10)  # closed as soon as it is accepted
    third.close()
    assert answers(first, 2) and answers(second, 3)  # the others are not disturbed
    first.close()
    again = served_connection(b.port)  # the freed slot is usable again
    assert answers(again, 4)
    for s in (second, again):
        s.close()
    assert "Rejected connection from 127.0.0.1, address already has the configured " \
           "maximum of 2 connections" in b.log_text()


def test_per_ip_overrides_and_describe_configs(start_broker):
    b = start_broker({"max.connections.per.ip": "0",
                      "max.connections.per.ip.overrides": "127.0.0.1:3,localhost:3",
                      "connections.max.idle.ms": "30000",
                      "socket.request.max.bytes": "1048576",
                      "queued.max.request.bytes": "4194304"})
    socks = [served_connection(b.port) for _ in range(3)]
    extra = KafkaSocket(HOST, b.port)
    assert extra.wait_closed(timeout=10)
    extra.close()
    for s in socks:
        s.close()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(ResourceType.BROKER, "1")
    entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
    got = {k: entries[k].value for k in (
        "connections.max.idle.ms", "max.connections", "max.connections.per.ip",
        "max.connections.per.ip.overrides", "queued.max.request.bytes")}
    assert got == {"connections.max.idle.ms": "30000", "max.connections": "2147483647",
                   "max.connections.per.ip": "0",
                   "max.connections.per.ip.overrides": "127.0.0.1:3,localhost:3",
                   "queued.max.request.bytes": "4194304"}


def test_max_connections_makes_new_connections_wait_for_a_slot(start_broker):
    b = start_broker({"max.connections": "2"})
    first = served_connection(b.port)
    second = served_connection(b.port)
    waiting = KafkaSocket(HOST, b.port)  # TCP accepts it; the broker does not serve it yet
    waiting.send(api_versions_v0(5))
    assert answers(second, 6)  # the broker read it after the waiting one's request
    waiting.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        waiting.sock.recv(1)  # no answer (and not closed) while both slots are taken
    waiting.sock.setblocking(True)
    waiting.sock.settimeout(15)
    first.close()  # a slot comes free: the waiting connection is served
    resp = parse_api_versions_v0(waiting.recv_frame())
    assert (resp.correlation_id, resp.error_code) == (5, 0)
    for s in (second, waiting):
        s.close()


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_queued_max_request_bytes_bounds_the_buffers_of_partial_frames(start_broker):
    """Eight connections each announce a 16 MiB request and send 1000 bytes of it: only one
    gets its 16 MiB buffer (the pool holds 16 MiB), the others are not read; a small
    request on another connection is still answered. Once they are gone, a large Produce
    from a real client goes through."""
    size = 16 << 20
    b = start_broker({"socket.request.max.bytes": str(size),
                      "queued.max.request.bytes": str(size)})
    probe = served_connection(b.port)
    before = _rss_bytes(b.pid)
    attackers = []
    for i in range(8):
        s = socket.create_connection((HOST, b.port), timeout=10)
        s.sendall(struct.pack(">i", size) + b"\0" * 1000)
        attackers.append(s)
        assert answers(probe, 100 + i)  # read after that connection's bytes
    grown = _rss_bytes(b.pid) - before
    assert grown < 3 * size, f"RSS grew by {grown >> 20} MiB for 8 partial 16 MiB frames"
    for s in attackers:
        s.close()
    p = Producer({"bootstrap.servers": b.bootstrap, "message.max.bytes": 900_000})
    acks = []
    p.produce("large", value=b"v" * 800_000, on_delivery=lambda e, m: acks.append(e))
    assert p.flush(30) == 0 and acks == [None]
    probe.close()


@pytest.mark.parametrize("key,value", [
    ("queued.max.request.bytes", "1000"),  # below socket.request.max.bytes
    ("max.connections.per.ip.overrides", "host:many"),
    ("max.connections", "-1"),
])
def test_bad_values_are_a_one_line_startup_error(key, value):
    b = BrokerProcess(overrides={key: value}, startup_timeout=15)
    try:
        with pytest.raises(BrokerStartError):
            b.start()
        assert b.returncode not in (None, 0)
        assert key in b.log_text(current_run_only=True)
        assert "Traceback" not in b.log_text()
    finally:
        b.close()


def test_the_inter_broker_listener_is_served_at_max_connections(start_broker):
    """Kafka's rule with several listeners: a connection on the inter-broker listener is
    served even when max.connections is reached, and the least recently active connection
    of another listener is closed to make room."""
    internal, external = free_port(), free_port()
    b = start_broker({"max.connections": "2", "inter.broker.listener.name": "INTERNAL",
                      "listeners": f"INTERNAL://{HOST}:{internal},EXTERNAL://{HOST}:{external}",
                      "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"},
                     port=internal)
    older = served_connection(external)
    newer = served_connection(external)
    assert answers(older, 2) is True and answers(newer, 3) is True  # newer: more recent
    with KafkaSocket(HOST, internal) as broker_link:
        assert answers(broker_link, 4)  # served at once
        assert older.wait_closed(timeout=10)  # the least recently active one made room
        assert answers(newer, 5)
    for s in (older, newer):
        s.close()
    assert "reached by inter-broker connections" in b.log_text()


def test_a_dynamic_override_naming_an_unknown_host_does_not_stop_the_broker(start_broker):
    """A dynamic max.connections.per.ip.overrides whose host name does not resolve is
    logged and not applied; the broker keeps serving (it used to exit: the start-up error
    was raised in the task applying the change)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    b = start_broker({})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[ConfigEntry(
        "max.connections.per.ip.overrides", "no-such-host.invalid:3",
        incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=15)
    deadline = time.monotonic() + 30
    while "no-such-host.invalid" not in b.log_text() and b.returncode is None:
        assert time.monotonic() < deadline, "the change was never applied"
        time.sleep(0.05)
    sock = served_connection(b.port)
    assert answers(sock, 9)
    sock.close()
    assert b.returncode is None


def test_a_connection_whose_client_stops_reading_is_closed_once_idle(start_broker,
                                                                     topic_name):
    """connections.max.idle.ms also ends a connection whose responses wait for a client
    that reads nothing (as Kafka: no bytes written is no activity); it used to be kept
    open for ever, since a request blocked on writing counted as in progress."""
    b = start_broker({"connections.max.idle.ms": "1000"})
    create_topic(b.bootstrap, topic_name, 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 50})
    for _ in range(200):
        p.produce(topic_name, value=b"v" * 20_000)
    assert p.flush(30) == 0
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client reads nothing
    s.connect((HOST, b.port))
    try:
        for cid in range(4):  # about 16 MB of responses: more than the socket buffers take
            s.sendall(fetch_v4(topic_name, 0, 0, max_bytes=8 << 20,
                               partition_max_bytes=8 << 20, correlation_id=cid))
        client_port = s.getsockname()[1]
        deadline = time.monotonic() + 20
        # the client sees no FIN (it is queued behind the unread bytes): look at the
        # broker's side of the connection, which leaves ESTABLISHED once it is closed
        while _tcp_state(b.port, client_port) == ESTABLISHED:
            assert time.monotonic() < deadline, \
                "a connection whose client reads nothing was never closed"
            time.sleep(0.05)
    finally:
        s.close()


ESTABLISHED = "01"


def _tcp_state(local_port: int, remote_port: int) -> str | None:
    """The state (hex, as /proc/net/tcp shows it) of the IPv4 socket local_port ->
    remote_port, or None if there is none."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, remote, state = line.split()[1:4]
            if int(local.rsplit(":", 1)[1], 16) == local_port and \
                    int(remote.rsplit(":", 1)[1], 16) == remote_port:
                return state
    return None
