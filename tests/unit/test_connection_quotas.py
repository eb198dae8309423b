"""strom.server.connection_quotas.ConnectionQuotas (max.connections, max.connections.per.ip
and its overrides) and the validation of those keys and of queued.max.request.bytes and
connections.max.idle.ms in strom.config."""

from __future__ import annotations

import pytest

from strom.config import BrokerConfig, ConfigError, parse_connection_overrides
from strom.server.connection_quotas import (
    MAX_PARKED,
    RESERVED_PER_BROKER,
    Admission,
    ConnectionQuotas,
    normalize_ip,
)

A, B = "10.0.0.1", "10.0.0.2"


def quotas(max_connections=1000, max_per_ip=1000, overrides=None, listeners=("PLAINTEXT",),
           brokers=None) -> ConnectionQuotas:
    return ConnectionQuotas(max_connections, max_per_ip, overrides or {}, listeners,
                            listeners[0], lambda: dict(brokers or {}))


def test_per_ip_limit_refuses_and_a_release_frees_the_slot():
    q = quotas(max_per_ip=2)
    assert q.admit("PLAINTEXT", A, 1) is Admission.ACCEPT
    assert q.admit("PLAINTEXT", A, 2) is Admission.ACCEPT
    assert q.admit("PLAINTEXT", A, 3) is Admission.REFUSE_IP
    assert q.admit("PLAINTEXT", B, 4) is Admission.ACCEPT  # another address
    assert (q.total, q.per_ip[A]) == (3, 2)  # a refused connection is not counted
    q.release(A)
    assert q.admit("PLAINTEXT", A, 5) is Admission.ACCEPT


def test_overrides_win_over_the_default_and_ipv4_mapped_addresses_are_the_same():
    q = quotas(max_per_ip=0, overrides={A: 1})
    assert q.admit("PLAINTEXT", "::ffff:" + A, 1) is Admission.ACCEPT
    assert q.admit("PLAINTEXT", A, 2) is Admission.REFUSE_IP
    assert q.admit("PLAINTEXT", B, 3) is Admission.REFUSE_IP  # the default: 0
    assert normalize_ip("::ffff:127.0.0.1") == "127.0.0.1"


def test_max_connections_parks_in_order_until_a_slot_is_free():
    q = quotas(max_connections=2)
    assert q.admit("PLAINTEXT", A, "a") is Admission.ACCEPT
    assert q.admit("PLAINTEXT", B, "b") is Admission.ACCEPT
    assert q.admit("PLAINTEXT", A, "c") is Admission.PARK
    assert q.admit("PLAINTEXT", B, "d") is Admission.PARK
    assert q.next_parked() is None  # no slot yet
    q.release(A)
    assert q.next_parked() == "c" and q.next_parked() is None
    q.release(B)
    assert q.next_parked() == "d"
    assert q.total == 2 and q.per_ip == {A: 1, B: 1}


def test_parked_connections_are_bounded_and_count_against_their_address():
    q = quotas(max_connections=0, max_per_ip=MAX_PARKED + 5)
    for i in range(MAX_PARKED):
        assert q.admit("PLAINTEXT", A, i) is Admission.PARK
    assert q.admit("PLAINTEXT", B, "late") is Admission.REFUSE_FULL
    q2 = quotas(max_connections=0, max_per_ip=1)
    assert q2.admit("PLAINTEXT", A, 1) is Admission.PARK
    assert q2.admit("PLAINTEXT", A, 2) is Admission.REFUSE_IP


def test_the_inter_broker_listener_is_taken_at_the_limit_when_there_are_several():
    q = quotas(max_connections=1, listeners=("INTERNAL", "EXTERNAL"))
    assert q.admit("EXTERNAL", A, 1) is Admission.ACCEPT
    assert not q.excess()
    assert q.admit("EXTERNAL", A, 2) is Admission.PARK
    assert q.admit("INTERNAL", B, 3) is Admission.ACCEPT
    assert q.excess()  # the broker closes the least recent EXTERNAL connection


def test_single_listener_reserves_slots_for_other_brokers_addresses():
    q = quotas(max_connections=1, brokers={B: 2})  # two other brokers on host B
    assert q.admit("PLAINTEXT", A, 1) is Admission.ACCEPT
    assert q.admit("PLAINTEXT", A, 2) is Admission.PARK  # a client waits
    for i in range(2 * RESERVED_PER_BROKER):
        assert q.admit("PLAINTEXT", B, i) is Admission.ACCEPT
    assert q.admit("PLAINTEXT", B, "more") is Admission.PARK  # the reserve is bounded
    assert not q.excess()  # no client connection is closed for them
    q.release(B)
    assert q.reserved[B] == 2 * RESERVED_PER_BROKER - 1


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("127.0.0.1:200", {"127.0.0.1": 200}),
    ("hostName:100, 127.0.0.1:200", {"hostName": 100, "127.0.0.1": 200}),
    ("::1:5,[fe80::1]:0", {"::1": 5, "fe80::1": 0}),
])
def test_overrides_format(text, expected):
    assert parse_connection_overrides(text) == expected


@pytest.mark.parametrize("override", [
    "max.connections.per.ip.overrides=host",
    "max.connections.per.ip.overrides=host:x",
    "max.connections.per.ip.overrides=host:-1",
    "max.connections.per.ip.overrides=bad_host!:1",
    "max.connections.per.ip.overrides=:3",
    "max.connections=-1",
    "max.connections=lots",
    "max.connections.per.ip=-1",
    "max.connections.per.ip=0",  # only with overrides
    "max.connections.per.ip=2147483648",
    "queued.max.request.bytes=1000",  # below socket.request.max.bytes
    "queued.max.request.bytes=1.5",
    "connections.max.idle.ms=soon",
])
def test_bad_values_are_config_errors_naming_the_key(override):
    with pytest.raises(ConfigError) as e:
        BrokerConfig.load(None, [override])
    assert override.split("=")[0] in str(e.value)


def test_defaults_are_kafkas_and_good_values_load():
    c = BrokerConfig.load(None, [])
    assert c.get("connections.max.idle.ms") == 600000
    assert c.get("max.connections") == c.get("max.connections.per.ip") == 2147483647
    assert c.get("max.connections.per.ip.overrides") == ""
    assert c.get("queued.max.request.bytes") == -1
    c = BrokerConfig.load(None, ["max.connections.per.ip=0",
                                 "max.connections.per.ip.overrides=127.0.0.1:3",
                                 "socket.request.max.bytes=1000",
                                 "queued.max.request.bytes=1000",
                                 "connections.max.idle.ms=-1"])
    assert c.get("queued.max.request.bytes") == 1000
    assert c.get("connections.max.idle.ms") == -1
