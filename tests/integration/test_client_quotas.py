"""Client quotas with real clients: AlterClientQuotas / DescribeClientQuotas (raw requests
and `strom configs`), a producer and a consumer held to their byte rates (loose bounds on
bytes over a few seconds, never the timing of one request), the throttle time seen by
confluent-kafka's throttle_cb, an unthrottled client on the same broker not slowed, and bad
input answered INVALID_REQUEST.

The broker measures over quota.window.num=2 windows of 1 s, so a first burst is bounded by
about two seconds' worth of the quota.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from strom.cli._common import broker_request
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[2]
INVALID_REQUEST = 42
RATE = 200_000  # bytes per second
RUN_S = 4.0


@pytest.fixture(scope="module")
def broker_overrides():
    return {"quota.window.num": 2, "quota.window.size.seconds": 1}


def _alter(broker, entity: list[tuple[str, str | None]], ops: list[tuple[str, float, bool]],
           validate_only: bool = False):
    mod = request_module(49, 1)
    req = make(request_schema(49, 1), validate_only=validate_only, entries=(make(
        mod.EntryData,
        entity=tuple(make(mod.EntityData, entity_type=t, entity_name=n) for t, n in entity),
        ops=tuple(make(mod.OpData, key=k, value=v, remove=r) for k, v, r in ops)),))
    return broker_request("127.0.0.1", broker.port, req, "quota-test", 10).entries[0]


def _describe(broker, components: list[tuple[str, int, str | None]], strict=False):
    mod = request_module(48, 1)
    req = make(request_schema(48, 1), strict=strict, components=tuple(
        make(mod.ComponentData, entity_type=t, match_type=m, match=n)
        for t, m, n in components))
    return broker_request("127.0.0.1", broker.port, req, "quota-test", 10)


def _produce_for(bootstrap: str, topic: str, client_id: str, seconds: float,
                 throttles: list, limit: int = 1 << 62) -> int:
    """Bytes of values acknowledged while producing as fast as possible for `seconds` (or
    until `limit` bytes are sent)."""
    acked = [0]
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
                  "batch.size": 100_000,
                  "throttle_cb": lambda event: throttles.append(event.throttle_time)})

    def delivered(err, msg):
        if err is None:
            acked[0] += len(msg.value())
    value = b"x" * 10_000
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline and sent < limit:
        sent += len(value)
        try:
            p.produce(topic, value, on_delivery=delivered)
        except BufferError:
            p.poll(0.05)
            continue
        p.poll(0)
    if sent < limit:
        p.purge()  # what was not sent in time does not count
    p.flush(30)
    return acked[0]


def test_alter_and_describe(module_broker):
    r = _alter(module_broker, [("user", "alice"), ("client-id", "app")],
               [("producer_byte_rate", 1024, False), ("request_percentage", 50.5, False)])
    assert r.error_code == 0, r.error_message
    r = _alter(module_broker, [("client-id", None)], [("consumer_byte_rate", 2048, False)])
    assert r.error_code == 0
    found = _describe(module_broker, [("user", 0, "alice")])
    assert found.error_code == 0
    [entry] = found.entries
    assert {(e.entity_type, e.entity_name) for e in entry.entity} == {
        ("user", "alice"), ("client-id", "app")}
    assert {(v.key, v.value) for v in entry.values} == {
        ("producer_byte_rate", 1024.0), ("request_percentage", 50.5)}
    assert _describe(module_broker, [("user", 0, "alice")], strict=True).entries == ()
    defaults = _describe(module_broker, [("client-id", 1, None)])
    assert [[(e.entity_type, e.entity_name) for e in x.entity] for x in defaults.entries] == [
        [("client-id", None)]]
    # remove, and validate_only changes nothing
    assert _alter(module_broker, [("client-id", None)],
                  [("consumer_byte_rate", 0, True)]).error_code == 0
    assert _alter(module_broker, [("client-id", "v")], [("producer_byte_rate", 5, False)],
                  validate_only=True).error_code == 0
    assert _describe(module_broker, [("client-id", 2, None)], strict=True).entries == ()
    assert _alter(module_broker, [("user", "alice"), ("client-id", "app")],
                  [("producer_byte_rate", 0, True),
                   ("request_percentage", 0, True)]).error_code == 0
    assert _describe(module_broker, []).entries == ()


@pytest.mark.parametrize("entity, ops", [
    ([("user", "a")], [("no_such_quota", 1, False)]),
    ([("user", "a")], [("producer_byte_rate", -5, False)]),
    ([("user", "a")], [("producer_byte_rate", 1.5, False)]),
    ([("ip", "1.2.3.4")], [("producer_byte_rate", 10, False)]),
    ([("user", "a"), ("user", "b")], [("producer_byte_rate", 10, False)]),
    ([], [("producer_byte_rate", 10, False)]),
])
def test_bad_alter_gets_invalid_request(module_broker, entity, ops):
    r = _alter(module_broker, entity, ops)
    assert r.error_code == INVALID_REQUEST and r.error_message


def test_bad_describe_gets_invalid_request(module_broker):
    assert _describe(module_broker, [("nope", 0, "x")]).error_code == INVALID_REQUEST
    assert _describe(module_broker, [("user", 0, None)]).error_code == INVALID_REQUEST
    assert _describe(module_broker, [("user", 2, None), ("user", 1, None)]
                     ).error_code == INVALID_REQUEST


def test_producer_throttled_to_its_rate_and_others_not(module_broker):
    topic = create_topic(module_broker.bootstrap, "quota-produce")
    assert _alter(module_broker, [("client-id", "slow-producer")],
                  [("producer_byte_rate", RATE, False)]).error_code == 0
    throttles: list = []
    slow = _produce_for(module_broker.bootstrap, topic, "slow-producer", RUN_S, throttles)
    # the unthrottled one stops at 5 MB: enough to tell, without filling the disk
    fast = _produce_for(module_broker.bootstrap, topic, "fast-producer", RUN_S, [],
                        limit=5_000_000)
    print(f"produced in {RUN_S} s: throttled {slow} B, unthrottled {fast} B, "
          f"max throttle {max(throttles, default=0)} s")
    # at most the rate over the run plus about two windows of burst (loose), and throttled
    assert slow <= RATE * (RUN_S + 3), slow
    assert slow >= RATE * 1, slow  # it did make progress
    assert throttles and max(throttles) > 0
    assert fast >= 4_000_000 > 2 * slow, (fast, slow)


def test_consumer_throttled_to_its_rate(module_broker):
    topic = create_topic(module_broker.bootstrap, "quota-fetch")
    _produce_for(module_broker.bootstrap, topic, "filler", 10.0, [], limit=3_000_000)
    assert _alter(module_broker, [("user", "ANONYMOUS"), ("client-id", "slow-consumer")],
                  [("consumer_byte_rate", RATE, False)]).error_code == 0
    throttles: list = []
    c = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": "quota-g",
                  "client.id": "slow-consumer", "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 100_000, "message.max.bytes": 100_000,
                  "max.partition.fetch.bytes": 100_000,
                  "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    c.subscribe([topic])
    got, started = 0, None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            if started is None:
                started = time.monotonic()
            got += len(m.value())
            if time.monotonic() - started >= RUN_S:
                break
    finally:
        c.close()
    assert started is not None
    print(f"consumed in {RUN_S} s: {got} B, max throttle {max(throttles, default=0)} s")
    assert got <= RATE * (RUN_S + 3) + 200_000, got  # plus the fetches already in flight
    assert throttles and max(throttles) > 0


def test_strom_configs_users_and_clients(module_broker):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                        if p)

    def strom(*args):
        return subprocess.run([sys.executable, "-m", "strom", "configs", "--bootstrap-server",
                               module_broker.bootstrap, *args], capture_output=True,
                              text=True, timeout=60, env=env)
    r = strom("--alter", "--entity-type", "users", "--entity-name", "bob", "--add-config",
              "producer_byte_rate=1048576,consumer_byte_rate=2097152")
    assert r.returncode == 0, r.stderr
    assert "Completed updating config for user bob." in r.stdout
    r = strom("--alter", "--entity-type", "clients", "--entity-default", "--add-config",
              "request_percentage=200")
    assert r.returncode == 0, r.stderr
    r = strom("--describe", "--entity-type", "users", "--entity-name", "bob")
    assert "Quota configs for user-principal 'bob' are " in r.stdout
    assert "producer_byte_rate=1048576.0" in r.stdout
    r = strom("--describe", "--entity-type", "clients")
    assert "the default client-id" in r.stdout and "request_percentage=200.0" in r.stdout
    r = strom("--alter", "--user", "bob", "--delete-config",
              "producer_byte_rate,consumer_byte_rate")
    assert r.returncode == 0, r.stderr
    assert _describe(module_broker, [("user", 0, "bob")]).entries == ()
    r = strom("--alter", "--entity-type", "users", "--entity-name", "bob", "--add-config",
              "bogus=1")
    assert r.returncode == 1 and "bogus" in r.stderr


def test_request_percentage_throttles_busy_client(module_broker):
    from confluent_kafka.admin import AdminClient

    assert _alter(module_broker, [("client-id", "busy")],
                  [("request_percentage", 0.01, False)]).error_code == 0
    throttles: list = []
    admin = AdminClient({"bootstrap.servers": module_broker.bootstrap, "client.id": "busy",
                         "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    for _ in range(30):
        try:
            admin.list_topics(timeout=2)
        except KafkaException:
            pass  # a muted channel: librdkafka also holds back for the throttle time
        admin.poll(0.1)
        if throttles:
            break
    assert throttles and max(throttles) > 0
