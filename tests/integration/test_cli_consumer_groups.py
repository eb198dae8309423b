"""`strom consumer-groups` run as a user runs it: a subprocess against a real broker, its
output checked line by line (Kafka's kafka-consumer-groups.sh layout: a blank line, then a
header and rows whose columns are padded as Kafka pads them).

Groups are set up with confluent-kafka directly: committed offsets through a consumer that
commits without joining (an Empty group), live members through a subscribed consumer polling
in this process.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from strom.testing.broker import BrokerProcess
from strom.testing.kafka import create_topic

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 90  # seconds for one tool invocation
WAIT = 30.0  # seconds for a group to reach a state
T0 = 1704067200000  # 2024-01-01T00:00:00.000Z


@pytest.fixture(scope="module")
def module_broker():
    """Overrides conftest's `module_broker`: groups here form at once
    (group.initial.rebalance.delay.ms=0). A peer broker (STROM_TEST_BROKER_ARGV) runs as it is
    configured."""
    argv = shlex.split(os.environ.get("STROM_TEST_BROKER_ARGV", "")) or None
    overrides = None if argv else {"group.initial.rebalance.delay.ms": 0}
    b = BrokerProcess(overrides=overrides, argv_template=argv)
    try:
        b.start()
        yield b
    finally:
        b.close()


# -- running the tool ---------------------------------------------------------------------------


def cg(broker, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "strom", "consumer-groups", "--bootstrap-server",
         broker.bootstrap, *args],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT, cwd=REPO_ROOT,
        env=env,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", errors="replace"),
                                       proc.stderr.decode("utf-8", errors="replace"))


def _show(r: subprocess.CompletedProcess) -> str:
    return f"{r.args} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


def ok(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, _show(r)
    return r.stdout.splitlines()


def fails(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 1, _show(r)
    return r


# -- expected tables (Kafka's %-Ns columns) -------------------------------------------------------


def line(widths: list[int], values: list[object]) -> str:
    cells = [str(v).ljust(w) for w, v in zip(widths, values[:-1], strict=False)]
    return " ".join([*cells, str(values[-1])]).rstrip()


def offsets_table(group: str, rows: list[tuple]) -> list[str]:
    """rows: (topic, partition, current, log end, lag, consumer id, host, client id)."""
    widths = [max(15, len(group)), max([15, *(len(r[0]) for r in rows)]), 10, 15, 15, 15,
              max([15, *(len(r[5]) for r in rows)]), max([15, *(len(r[6]) for r in rows)])]
    header = ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
              "CONSUMER-ID", "HOST", "CLIENT-ID"]
    return ["", line(widths, header)] + [line(widths, [group, *r]) for r in rows]


def contains_block(lines: list[str], block: list[str]) -> bool:
    return any(lines[i:i + len(block)] == block for i in range(len(lines)))


def idle_rows(topic: str, rows: list[tuple[int, int, int]]) -> list[tuple]:
    """(partition, committed, log end) of a group without members -> offsets_table rows."""
    return [(topic, p, c, end, end - c, "-", "-", "-") for p, c, end in rows]


def reset_table(group: str, rows: list[tuple[str, int, int]]) -> list[str]:
    widths = [max(15, len(group)), max([15, *(len(t) for t, _, _ in rows)]), 10]
    return ["", line(widths, ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"])] + [
        line(widths, [group, t, p, o]) for t, p, o in rows]


def status_table(rows: list[tuple[str, object, str]]) -> list[str]:
    widths = [max([15, *(len(t) for t, _, _ in rows)]), 10, 15]
    return ["", line(widths, ["TOPIC", "PARTITION", "STATUS"])] + [
        line(widths, list(r)) for r in rows]


# -- setting up groups with confluent-kafka --------------------------------------------------------


def produce(bootstrap: str, topic: str, partition: int, count: int,
            timestamps: list[int] | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    failures = []
    for i in range(count):
        kwargs = {"timestamp": timestamps[i]} if timestamps else {}
        producer.produce(topic, f"v{i}".encode(), partition=partition,
                         on_delivery=lambda err, _msg: err and failures.append(err), **kwargs)
    assert producer.flush(30) == 0, "records not delivered in time"
    assert not failures, failures


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit without joining the group (generation -1): the group stays Empty."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                 asynchronous=False)
    finally:
        c.close()


def describe_group(bootstrap: str, group: str):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=20)


def wait_state(bootstrap: str, group: str, state: str) -> None:
    deadline = time.monotonic() + WAIT
    seen = None
    while time.monotonic() < deadline:
        seen = describe_group(bootstrap, group).state.name
        if seen == state:
            return
        time.sleep(0.1)
    raise TimeoutError(f"group {group} is {seen}, not {state}, after {WAIT}s")


class Member:
    """A confluent-kafka consumer subscribed to `topics` in group `group`, polled here."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], **conf) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  **conf})
        self.consumer.subscribe(topics)
        self.records = 0

    def poll_until(self, partitions: int, records: int = 0) -> None:
        """Poll until `partitions` partitions are assigned and `records` records were read."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                self.records += 1
            if len(self.consumer.assignment()) == partitions and self.records >= records:
                return
        raise TimeoutError(f"assigned {self.consumer.assignment()}, read {self.records} "
                           f"records after {WAIT}s")

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def members():
    started: list[Member] = []

    def start(*args, **kwargs) -> Member:
        m = Member(*args, **kwargs)
        started.append(m)
        return m

    yield start
    for m in started:
        m.close()


# -- tests -------------------------------------------------------------------------------------


def test_bad_command_lines(module_broker):
    r = fails(cg(module_broker, "--describe"))
    assert r.stderr.splitlines() == [
        "Option --describe takes one of these options: --group, --all-groups"]
    r = fails(cg(module_broker, "--reset-offsets", "--group", "g", "--topic", "t"))
    assert r.stderr.splitlines()[0].startswith(
        "Option --reset-offsets requires one of the following scenarios: --to-earliest")
    r = fails(cg(module_broker, "--reset-offsets", "--group", "g", "--to-latest"))
    assert r.stderr.splitlines() == [
        "One of the reset scopes should be defined: --all-topics, --topic."]
    r = fails(cg(module_broker, "--delete-offsets", "--group", "g"))
    assert r.stderr.splitlines() == [
        "Option --delete-offsets takes the following options: --group, --topic"]
    r = fails(cg(module_broker, "--list", "--members"))
    assert r.stderr.splitlines() == ["Option --members can only be used with --describe"]
    r = fails(cg(module_broker, "--list", "--state", "bogus"))
    assert r.stderr.splitlines() == [
        "Invalid state list 'bogus'. Valid states are: PreparingRebalance, "
        "CompletingRebalance, Stable, Dead, Empty"]
    r = cg(module_broker, "--reset-offsets", "--group", "g", "--all-topics", "--to-earliest",
           "--dry-run", "--execute")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr, _show(r)


def test_list_with_state_filter(module_broker, topic_name, members):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    produce(bs, topic_name, 0, 3)
    idle, active = f"{topic_name}-idle", f"{topic_name}-active"
    commit(bs, idle, {(topic_name, 0): 1})
    members(bs, active, [topic_name]).poll_until(partitions=1)
    wait_state(bs, active, "STABLE")

    listed = ok(cg(module_broker, "--list"))
    assert idle in listed and active in listed
    assert listed == sorted(listed)

    def by_state(*args: str) -> dict[str, str]:
        lines = ok(cg(module_broker, "--list", *args))
        rows = [ln.split() for ln in lines[1:]]
        width = max([15, *(len(name) for name, _ in rows)]) + 10
        assert lines == [line([width, 20], ["GROUP", "STATE", ""])] + [
            line([width, 20], [name, state, ""]) for name, state in rows]
        return dict(rows)

    everything = by_state("--state")
    assert everything[idle] == "Empty" and everything[active] == "Stable"
    stable = by_state("--state", "Stable")
    assert stable[active] == "Stable" and idle not in stable
    assert set(stable.values()) == {"Stable"}
    empty = by_state("--state", "empty")
    assert empty[idle] == "Empty" and active not in empty
    both = by_state("--state", "stable,Empty")
    assert both[idle] == "Empty" and both[active] == "Stable"


def test_describe_offsets_members_and_state(module_broker, topic_name, members):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 3)
    for partition, count in ((0, 5), (1, 3), (2, 4)):
        produce(bs, topic_name, partition, count)
    group = f"{topic_name}-g"
    member = members(bs, group, [topic_name], **{"client.id": "cg-test-client"})
    member.poll_until(partitions=3, records=12)
    member.consumer.commit(offsets=[TopicPartition(topic_name, 0, 2),
                                    TopicPartition(topic_name, 1, 3)], asynchronous=False)
    wait_state(bs, group, "STABLE")
    (m,) = describe_group(bs, group).members
    mid, host = m.member_id, m.host
    client = "cg-test-client"
    assert m.client_id == client

    # Offsets: assigned partitions, with "-" where nothing is committed.
    r = cg(module_broker, "--describe", "--group", group)
    assert ok(r) == offsets_table(group, [
        (topic_name, 0, 2, 5, 3, mid, host, client),
        (topic_name, 1, 3, 3, 0, mid, host, client),
        (topic_name, 2, "-", 4, "-", mid, host, client),
    ])
    assert r.stderr == ""
    assert ok(cg(module_broker, "--describe", "--group", group, "--offsets")) == ok(r)

    # Members, and their assignment with --verbose.
    widths = [max(15, len(group)), max(15, len(mid)), max(15, len(host)), 15, 15]
    header = ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
    assert ok(cg(module_broker, "--describe", "--group", group, "--members")) == [
        "", line(widths, header + [""]), line(widths, [group, mid, host, client, 3, ""])]
    assert ok(cg(module_broker, "--describe", "--group", group, "--members", "--verbose")) == [
        "", line(widths, header + ["ASSIGNMENT"]),
        line(widths, [group, mid, host, client, 3, f"{topic_name}(0,1,2)"])]

    # State.
    coordinator = f"127.0.0.1:{module_broker.port}  ({module_broker.node_id})"
    widths = [max(15, len(group)), max(25, len(coordinator)), 20, 20]
    header = ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"]
    assert ok(cg(module_broker, "--describe", "--group", group, "--state")) == [
        "", line(widths, header), line(widths, [group, coordinator, "range", "Stable", 1])]

    # --all-groups prints this group's table among the others'.
    everything = ok(cg(module_broker, "--describe", "--all-groups"))
    assert contains_block(everything, ok(r))

    # The member leaves; more records arrive: lag grows, consumer columns become "-", and the
    # partition without a committed offset is no longer shown.
    member.close()
    wait_state(bs, group, "EMPTY")
    produce(bs, topic_name, 1, 2)
    r = cg(module_broker, "--describe", "--group", group)
    assert ok(r) == offsets_table(group, idle_rows(topic_name, [(0, 2, 5), (1, 3, 5)]))
    assert r.stderr.splitlines() == [f"Consumer group '{group}' has no active members."]

    r = cg(module_broker, "--describe", "--group", group, "--members")
    assert ok(r) == []
    assert r.stderr.splitlines() == [f"Consumer group '{group}' has no active members."]
    assert ok(cg(module_broker, "--describe", "--group", group, "--state")) == [
        "", line(widths, header), line(widths, [group, coordinator, "-", "Empty", 0])]

    # A group that does not exist.
    missing = f"{topic_name}-missing"
    for view in ((), ("--members",), ("--state",)):
        r = fails(cg(module_broker, "--describe", "--group", missing, *view))
        assert r.stdout == ""
        assert r.stderr.splitlines() == [f"Error: Consumer group '{missing}' does not exist."]
    # Several groups: each is described, the missing one is an error.
    r = fails(cg(module_broker, "--describe", "--group", group, "--group", missing))
    assert r.stdout.splitlines() == offsets_table(
        group, idle_rows(topic_name, [(0, 2, 5), (1, 3, 5)]))
    assert f"Error: Consumer group '{missing}' does not exist." in r.stderr.splitlines()


def test_reset_offsets_every_scenario(module_broker, topic_name):
    bs = module_broker.bootstrap
    t = topic_name
    create_topic(bs, t, 2)
    now = int(time.time() * 1000)
    # Partition 0: six records from 2024-01-01T00:00:00Z one second apart, then four from now.
    produce(bs, t, 0, 10, [T0 + i * 1000 for i in range(6)] + [now] * 4)
    # Partition 1: five records from 2024-01-01T00:00:00Z one second apart.
    produce(bs, t, 1, 5, [T0 + i * 1000 for i in range(5)])
    group = f"{t}-g"

    def check(args: list[str], new: tuple[int, ...], *, scope=("--all-topics",),
              partitions=(0, 1), warnings: list[str] = ()) -> None:
        """Dry run prints the plan and changes nothing; --execute prints it and commits it."""
        commit(bs, group, {(t, 0): 4, (t, 1): 2})
        expected = reset_table(group, [(t, p, o) for p, o in zip(partitions, new, strict=True)])
        r = cg(module_broker, "--reset-offsets", "--group", group, *scope, *args, "--dry-run")
        assert ok(r) == expected
        assert r.stderr.splitlines() == list(warnings)
        assert ok(cg(module_broker, "--describe", "--group", group)) == offsets_table(
            group, idle_rows(t, [(0, 4, 10), (1, 2, 5)]))
        r = cg(module_broker, "--reset-offsets", "--group", group, *scope, *args, "--execute")
        assert ok(r) == expected
        after = {0: 4, 1: 2, **dict(zip(partitions, new, strict=True))}
        assert ok(cg(module_broker, "--describe", "--group", group)) == offsets_table(
            group, idle_rows(t, [(0, after[0], 10), (1, after[1], 5)]))

    check(["--to-earliest"], (0, 0))
    check(["--to-latest"], (10, 5))
    check(["--to-current"], (4, 2))
    check(["--to-offset", "3"], (3, 3))
    check(["--to-offset", "7"], (7, 5), warnings=[
        f"WARN: New offset (7) is higher than latest offset for topic partition {t}-1. "
        "Value will be set to 5."])
    check(["--shift-by", "4"], (8, 5), warnings=[
        f"WARN: New offset (6) is higher than latest offset for topic partition {t}-1. "
        "Value will be set to 5."])
    check(["--shift-by", "-3"], (1, 0), warnings=[
        f"WARN: New offset (-1) is lower than earliest offset for topic partition {t}-1. "
        "Value will be set to 0."])
    check(["--to-datetime", "2024-01-01T00:00:02.500"], (3, 3))
    check(["--to-datetime", "2024-01-01T01:00:02.500+01:00"], (3, 3))
    check(["--by-duration", "PT1H"], (6, 5), warnings=[
        f"WARN: Partition 1 from topic {t} is empty. Falling back to latest known offset."])
    # Scopes: one partition, one topic.
    check(["--to-earliest"], (0,), scope=("--topic", f"{t}:1"), partitions=(1,))
    check(["--to-latest"], (10, 5), scope=("--topic", t))

    # Without --dry-run or --execute: a dry run with a warning.
    commit(bs, group, {(t, 0): 4, (t, 1): 2})
    r = cg(module_broker, "--reset-offsets", "--group", group, "--all-topics", "--to-earliest")
    assert ok(r) == reset_table(group, [(t, 0, 0), (t, 1, 0)])
    assert r.stderr.startswith("WARN: No action will be performed as the --execute option is "
                               "missing.")
    assert ok(cg(module_broker, "--describe", "--group", group)) == offsets_table(
        group, idle_rows(t, [(0, 4, 10), (1, 2, 5)]))

    # --to-current where nothing is committed: the log end; --shift-by there: an error.
    partial = f"{t}-partial"
    commit(bs, partial, {(t, 0): 4})
    assert ok(cg(module_broker, "--reset-offsets", "--group", partial, "--topic", t,
                 "--to-current", "--dry-run")) == reset_table(partial, [(t, 0, 4), (t, 1, 5)])
    r = fails(cg(module_broker, "--reset-offsets", "--group", partial, "--topic", t,
                 "--shift-by", "1", "--execute"))
    assert r.stderr.splitlines() == [
        f"Error: Executing consumer group command failed due to Cannot shift offset for "
        f"partition {t}-1 since there is no current committed offset"]

    # Partitions that do not exist.
    r = fails(cg(module_broker, "--reset-offsets", "--group", group, "--topic", f"{t}:0,7",
                 "--to-earliest", "--execute"))
    assert r.stderr.splitlines() == [
        f'Error: Executing consumer group command failed due to The partitions "{t}-7" do '
        "not exist"]

    # A group that does not exist yet gets its offsets with --execute.
    fresh = f"{t}-fresh"
    assert ok(cg(module_broker, "--reset-offsets", "--group", fresh, "--topic", t,
                 "--to-offset", "2", "--execute")) == reset_table(fresh, [(t, 0, 2), (t, 1, 2)])
    assert ok(cg(module_broker, "--describe", "--group", fresh)) == offsets_table(
        fresh, idle_rows(t, [(0, 2, 10), (1, 2, 5)]))


def test_reset_offsets_refused_while_group_is_active(module_broker, topic_name, members):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    produce(bs, topic_name, 0, 4)
    group = f"{topic_name}-g"
    member = members(bs, group, [topic_name])
    member.poll_until(partitions=1, records=4)
    member.consumer.commit(offsets=[TopicPartition(topic_name, 0, 3)], asynchronous=False)
    wait_state(bs, group, "STABLE")

    for mode in ("--dry-run", "--execute"):
        r = fails(cg(module_broker, "--reset-offsets", "--group", group, "--topic", topic_name,
                     "--to-earliest", mode))
        assert r.stdout == ""
        assert r.stderr.splitlines() == [
            f"Error: Assignments can only be reset if the group '{group}' is inactive, but the "
            "current state is Stable."]
    (m,) = describe_group(bs, group).members
    assert ok(cg(module_broker, "--describe", "--group", group)) == offsets_table(
        group, [(topic_name, 0, 3, 4, 1, m.member_id, m.host, m.client_id)])

    member.poll_until(partitions=1)  # still a live member
    member.close()
    wait_state(bs, group, "EMPTY")
    assert ok(cg(module_broker, "--reset-offsets", "--group", group, "--topic", topic_name,
                 "--to-earliest", "--execute")) == reset_table(group, [(topic_name, 0, 0)])
    assert ok(cg(module_broker, "--describe", "--group", group)) == offsets_table(
        group, idle_rows(topic_name, [(0, 0, 4)]))


def test_delete_groups(module_broker, topic_name, members):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    produce(bs, topic_name, 0, 2)
    a, b, c = (f"{topic_name}-{x}" for x in "abc")
    for g in (a, b, c):
        commit(bs, g, {(topic_name, 0): 1})

    assert ok(cg(module_broker, "--delete", "--group", a)) == [
        f"Deletion of requested consumer groups ('{a}') was successful."]
    assert a not in ok(cg(module_broker, "--list"))
    r = fails(cg(module_broker, "--describe", "--group", a))
    assert r.stderr.splitlines() == [f"Error: Consumer group '{a}' does not exist."]

    # One deleted, one missing.
    r = fails(cg(module_broker, "--delete", "--group", b, "--group", a))
    assert r.stderr.splitlines() == [
        "Error: Deletion of some consumer groups failed:",
        f"* Group '{a}' could not be deleted due to: The group id does not exist."]
    assert r.stdout.splitlines() == [f"These consumer groups were deleted successfully: '{b}'"]
    assert b not in ok(cg(module_broker, "--list"))

    # A group with a member is not deleted.
    member = members(bs, c, [topic_name])
    member.poll_until(partitions=1)
    wait_state(bs, c, "STABLE")
    r = fails(cg(module_broker, "--delete", "--group", c))
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "Error: Deletion of some consumer groups failed:",
        f"* Group '{c}' could not be deleted due to: The group is not empty."]
    member.close()
    wait_state(bs, c, "EMPTY")
    assert ok(cg(module_broker, "--delete", "--group", c)) == [
        f"Deletion of requested consumer groups ('{c}') was successful."]


def test_delete_offsets(module_broker, topic_names, members):
    bs = module_broker.bootstrap
    ta, tb = topic_names.new("a"), topic_names.new("b")
    create_topic(bs, ta, 2)
    create_topic(bs, tb, 1)
    produce(bs, ta, 0, 3)
    produce(bs, ta, 1, 3)
    produce(bs, tb, 0, 3)
    group = f"{ta}-g"
    commit(bs, group, {(ta, 0): 1, (ta, 1): 2, (tb, 0): 3})

    def rows_left(expected: list[tuple]) -> None:
        assert ok(cg(module_broker, "--describe", "--group", group)) == offsets_table(
            group, expected)

    r = cg(module_broker, "--delete-offsets", "--group", group, "--topic", f"{ta}:0")
    assert ok(r) == [f"Request succeeded for deleting offsets from group {group}."] + \
        status_table([(ta, 0, "Successful")])
    rows_left(idle_rows(ta, [(1, 2, 3)]) + idle_rows(tb, [(0, 3, 3)]))

    assert ok(cg(module_broker, "--delete-offsets", "--group", group, "--topic", tb)) == [
        f"Request succeeded for deleting offsets from group {group}."] + \
        status_table([(tb, 0, "Successful")])
    rows_left(idle_rows(ta, [(1, 2, 3)]))

    # A topic that does not exist, next to one that does.
    missing = topic_names.new("missing")
    r = fails(cg(module_broker, "--delete-offsets", "--group", group, "--topic", missing,
                 "--topic", ta))
    assert r.stderr.splitlines() == [
        "Error: Encountered some partition-level error, see the follow-up details."]
    assert r.stdout.splitlines() == status_table(sorted([
        (missing, "-", "Error: This server does not host this topic-partition."),
        (ta, 0, "Successful"), (ta, 1, "Successful")]))
    r = cg(module_broker, "--describe", "--group", group)  # no offsets, no members
    assert ok(r) == []
    assert r.stderr.splitlines() == [f"Consumer group '{group}' has no active members."]

    # A group that does not exist.
    nogroup = f"{ta}-nogroup"
    r = fails(cg(module_broker, "--delete-offsets", "--group", nogroup, "--topic", tb))
    assert r.stderr.splitlines() == ["Error: The group id does not exist."]
    assert r.stdout.splitlines() == status_table(
        [(tb, 0, "Error: The group id does not exist.")])

    # A live group keeps the offsets of topics it subscribes to, not of the others.
    live = f"{ta}-live"
    member = members(bs, live, [ta])
    member.poll_until(partitions=2, records=6)
    member.consumer.commit(offsets=[TopicPartition(ta, 0, 3), TopicPartition(tb, 0, 1)],
                           asynchronous=False)
    wait_state(bs, live, "STABLE")
    r = fails(cg(module_broker, "--delete-offsets", "--group", live, "--topic", f"{ta}:0",
                 "--topic", tb))
    assert r.stderr.splitlines() == [
        "Error: Encountered some partition-level error, see the follow-up details."]
    assert r.stdout.splitlines() == status_table(sorted([
        (ta, 0, "Error: The consumer group is actively subscribed to the topic"),
        (tb, 0, "Successful")]))
    (m,) = describe_group(bs, live).members
    assert ok(cg(module_broker, "--describe", "--group", live)) == offsets_table(live, [
        (ta, 0, 3, 3, 0, m.member_id, m.host, m.client_id),
        (ta, 1, "-", 3, "-", m.member_id, m.host, m.client_id)])
