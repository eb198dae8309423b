"""Operator tools on a real 3-broker cluster: leader elections and partition reassignment.

- preferred election with `strom leader-election` (and kafka-python's KafkaAdminClient):
  leadership that moved off a killed broker goes back to it once it is in sync again; a
  second run has nothing to do;
- auto.leader.rebalance.enable moves leadership back by itself;
- `strom reassign-partitions` --generate / --execute / --verify moves an RF=2 partition from
  brokers {1,2} to {2,3} while a producer writes to it: every acknowledged record is
  readable afterwards, broker 1's partition directory is deleted, Metadata shows the new
  replicas;
- a broker added to the running cluster takes over a partition (kafka-python's
  KafkaAdminClient as the client) while an acks=all producer keeps succeeding;
- --list, --verify and --cancel of a reassignment that cannot finish (its partition is
  offline);
- bad input gets a one-line error from the tools and the precise error code from the
  broker (INVALID_REPLICA_ASSIGNMENT, UNKNOWN_TOPIC_OR_PARTITION,
  NO_REASSIGNMENT_IN_PROGRESS, NOT_CONTROLLER from a broker that is not the controller,
  after which the tool asks the controller of fresh metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from strom.cli import reassign_partitions
from strom.cli.main import main as strom_main
from strom.protocol.client import BrokerConnection
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.cluster import BackgroundProducer, read_partitions, wait_until

pytestmark = pytest.mark.timeout(150)

NOT_CONTROLLER = 41
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_REPLICATION_FACTOR = 38
NO_REASSIGNMENT_IN_PROGRESS = 85
ELECTION_NOT_NEEDED = 84


def strom(*argv: str) -> tuple[int, str, str]:
    """Run a `strom` command in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = strom_main(list(argv))
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 1
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return rc, out.getvalue(), err.getvalue()


def create(cluster, name: str, assignment: list[list[int]]) -> None:
    admin = cluster.admin()
    admin.create_topics([NewTopic(name, len(assignment), replica_assignment=assignment)]
                        )[name].result(timeout=30)
    for p, replicas in enumerate(assignment):
        cluster.wait_for_isr(name, p, set(replicas))


def produce(bootstrap: str, topic: str, count: int, partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(count):
        producer.produce(topic, b"%d" % i, partition=partition,
                         on_delivery=lambda e, m: e and errors.append(e))
    assert producer.flush(30) == 0
    assert errors == []


def check_acked(cluster, topic: str, producer: BackgroundProducer) -> None:
    """Every record the producer got an acknowledgement for is readable at its offset."""
    assert producer.errors == []
    ends = {p: cluster.high_watermark(topic, p) for p in range(producer.partitions)}
    records = read_partitions(cluster.live_bootstrap(), topic, ends)
    by_offset = {p: {offset: value for offset, _, value in rs} for p, rs in records.items()}
    for partition, offset, seq in producer.acked:
        assert by_offset[partition].get(offset) == b"%d" % seq, (partition, offset, seq)


def metadata_replicas(cluster, topic: str, partition: int) -> list[int]:
    return list(cluster.partition(topic, partition).replicas)


def raw(port: int, request):
    async def send():
        conn = BrokerConnection("127.0.0.1", port, timeout_s=10)
        await conn.connect()
        try:
            return await conn.request(request)
        finally:
            await conn.close()
    return asyncio.run(send())


def elect_request(topic: str, partitions: list[int], election_type: int = 0):
    mod = request_module(43, 2)
    return make(request_schema(43, 2), election_type=election_type,
                timeout=datetime.timedelta(seconds=10),
                topic_partitions=(make(mod.TopicPartitions, topic=topic,
                                       partitions=tuple(partitions)),))


def alter_request(changes: dict[tuple[str, int], list[int] | None], version: int = 0,
                  **fields):
    mod = request_module(45, version)
    by_topic: dict[str, list] = {}
    for (t, p), replicas in changes.items():
        by_topic.setdefault(t, []).append(make(
            mod.ReassignablePartition, partition_index=p,
            replicas=None if replicas is None else tuple(replicas)))
    return make(request_schema(45, version), timeout=datetime.timedelta(seconds=10),
                topics=tuple(make(mod.ReassignableTopic, name=t, partitions=tuple(ps))
                             for t, ps in by_topic.items()), **fields)


def list_request():
    return make(request_schema(46, 0), timeout=datetime.timedelta(seconds=10), topics=None)


def alter_codes(response) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.error_code for t in response.responses
            for p in t.partitions}


def write_json(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def plan(partitions: dict[tuple[str, int], list[int]]) -> dict:
    return {"version": 1, "partitions": [
        {"topic": t, "partition": p, "replicas": r} for (t, p), r in partitions.items()]}


# --- leader elections ---------------------------------------------------------------------------


def test_preferred_leader_election(make_cluster, tmp_path):
    from kafka.admin import KafkaAdminClient

    cluster = make_cluster(3, session_timeout_ms=3000)
    bootstrap = cluster.bootstrap
    topic = "pref"
    create(cluster, topic, [[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    produce(bootstrap, topic, 50)
    assert cluster.leader_of(topic, 0) == 1

    cluster.kill(1)  # leadership of pref-0 moves to 2 once broker 1's session expires
    assert cluster.wait_for_leader(topic, 0, not_on=1) == 2
    produce(cluster.live_bootstrap(), topic, 50)
    cluster.brokers[1].start()
    cluster.wait_for_isr(topic, 0, {1, 2, 3})
    cluster.wait_for_isr(topic, 2, {1, 2, 3})
    assert cluster.leader_of(topic, 0) != 1  # nothing moves it back by itself here

    rc, out, err = strom("leader-election", "--bootstrap-server", bootstrap,
                         "--election-type", "preferred", "--all-topic-partitions")
    assert rc == 0, err
    assert out.startswith("Successfully completed leader election (PREFERRED) for partitions ")
    assert "pref-0" in out.splitlines()[0]
    wait_until(lambda: cluster.leader_of(topic, 0) == 1, 15, what="broker 1 leads pref-0")
    assert [cluster.leader_of(topic, p) for p in range(3)] == [1, 2, 3]

    # nothing left to elect: over all partitions the answer lists none (as Kafka's)...
    rc, out, err = strom("leader-election", "--bootstrap-server", bootstrap,
                         "--election-type", "PREFERRED", "--all-topic-partitions")
    assert (rc, out) == (0, "")
    # ...for named partitions it says so
    rc, out, err = strom("leader-election", "--bootstrap-server", bootstrap,
                         "--election-type", "preferred", "--topic", topic, "--partition", "0")
    assert (rc, out) == (0, "Valid replica already elected for partitions pref-0\n"), err
    elect = write_json(tmp_path, "elect.json", {"partitions": [
        {"topic": topic, "partition": 2}, {"topic": topic, "partition": 1}]})
    rc, out, err = strom("leader-election", "--bootstrap-server", bootstrap,
                         "--election-type", "preferred", "--path-to-json-file", elect)
    assert (rc, out) == (0, "Valid replica already elected for partitions pref-1, pref-2\n")
    # unclean: every partition has a live leader
    rc, out, err = strom("leader-election", "--bootstrap-server", bootstrap,
                         "--election-type", "unclean", "--topic", topic, "--partition", "1")
    assert (rc, out) == (0, "Valid replica already elected for partitions pref-1\n")
    # a partition that does not exist
    rc, out, err = strom("leader-election", "--bootstrap-server", bootstrap,
                         "--election-type", "preferred", "--topic", topic, "--partition", "7")
    assert rc == 1 and out == ""
    assert err.startswith("Error completing leader election (PREFERRED) for partition: "
                          "pref-7: UNKNOWN_TOPIC_OR_PARTITION: ")
    assert "1 replica(s) could not be elected" in err

    # a preferred replica that is down cannot be elected
    cluster.kill(3)
    cluster.wait_for_leader(topic, 2, not_on=3)
    rc, out, err = strom("leader-election", "--bootstrap-server", cluster.live_bootstrap(),
                         "--election-type", "preferred", "--topic", topic, "--partition", "2")
    assert rc == 1
    assert "pref-2: PREFERRED_LEADER_NOT_AVAILABLE: " in err
    assert len(read_partitions(cluster.live_bootstrap(), topic, {0: 100})[0]) == 100

    # once it is back in sync, kafka-python's KafkaAdminClient elects it
    cluster.brokers[3].start()
    cluster.wait_for_isr(topic, 2, {1, 2, 3})
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        response = admin.elect_leaders(0, {topic: [2]})
        assert [(r.topic, p.partition_id, p.error_code) for r in
                response.replica_election_results for p in r.partition_result] == \
            [(topic, 2, 0)]
    finally:
        admin.close()
    wait_until(lambda: cluster.leader_of(topic, 2) == 3, 15, what="broker 3 leads pref-2")


def test_auto_leader_rebalance(make_cluster):
    cluster = make_cluster(3, session_timeout_ms=3000, overrides={
        "auto.leader.rebalance.enable": "true",
        "leader.imbalance.check.interval.seconds": 2})
    topic = "rebalanced"
    create(cluster, topic, [[1, 2], [2, 1], [1, 3]])
    cluster.kill(1)
    assert cluster.wait_for_leader(topic, 0, not_on=1) == 2
    assert cluster.wait_for_leader(topic, 2, not_on=1) == 3
    cluster.brokers[1].start()
    cluster.wait_for_brokers({1, 2, 3})
    # back in sync, broker 1 leads none of its two preferred partitions (100% > 10%): the
    # controller's next check moves both back
    wait_until(lambda: [cluster.leader_of(topic, p) for p in range(3)] == [1, 2, 1], 30,
               what="preferred leaders restored")
    assert set(cluster.isr_of(topic, 0)) == {1, 2}


# --- reassignment -----------------------------------------------------------------------------


def test_reassign_with_the_cli_while_producing(make_cluster, tmp_path):
    cluster = make_cluster(3, session_timeout_ms=3000)
    bootstrap = cluster.bootstrap
    topic = "moved"
    create(cluster, topic, [[1, 2]])
    produce(bootstrap, topic, 300)
    assert cluster.partition_dir(1, topic, 0).is_dir()

    topics_file = write_json(tmp_path, "topics.json",
                             {"version": 1, "topics": [{"topic": topic}]})
    rc, out, err = strom("reassign-partitions", "--bootstrap-server", bootstrap, "--generate",
                         "--topics-to-move-json-file", topics_file, "--broker-list", "2,3")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "Current partition replica assignment"
    assert json.loads(lines[1]) == {"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [1, 2], "log_dirs": ["any", "any"]}]}
    assert lines[2:4] == ["", "Proposed partition reassignment configuration"]
    proposal = json.loads(lines[4])
    target = proposal["partitions"][0]["replicas"]
    assert sorted(target) == [2, 3]
    assert proposal["partitions"][0]["log_dirs"] == ["any", "any"]
    plan_file = write_json(tmp_path, "plan.json", lines[4])

    with BackgroundProducer(bootstrap, topic, partitions=1) as producer:
        producer.wait_for_acks(200, timeout=30)
        rc, out, err = strom("reassign-partitions", "--bootstrap-server", bootstrap,
                             "--execute", "--reassignment-json-file", plan_file)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[:2] == ["Current partition replica assignment", ""]
        assert json.loads(lines[2])["partitions"][0]["replicas"] == [1, 2]
        assert lines[3:] == ["", "Save this to use as the --reassignment-json-file option "
                                 "during rollback",
                             f"Successfully started partition reassignment for {topic}-0"]
        producer.wait_for_acks(200, timeout=30)
        # --wait polls until the move completed, then prints --verify's status
        rc, out, err = strom("reassign-partitions", "--bootstrap-server", bootstrap,
                             "--verify", "--wait", "--wait-timeout-ms", "60000",
                             "--reassignment-json-file", plan_file)
        assert (rc, out) == (0, "Status of partition reassignment:\n"
                                f"Reassignment of partition {topic}-0 is completed.\n"), err

        def completed():
            rc, out, _ = strom("reassign-partitions", "--bootstrap-server", bootstrap,
                               "--verify", "--reassignment-json-file", plan_file)
            assert rc == 0
            assert out.startswith("Status of partition reassignment:\n")
            return out.endswith(f"Reassignment of partition {topic}-0 is completed.\n")
        wait_until(completed, 60, interval=0.5, what="reassignment completed")
        producer.wait_for_acks(200, timeout=30)
    check_acked(cluster, topic, producer)
    assert len(producer.acked) >= 600

    wait_until(lambda: metadata_replicas(cluster, topic, 0) == target, 15,
               what=f"replicas {target} in Metadata")
    cluster.wait_for_isr(topic, 0, {2, 3})
    assert cluster.leader_of(topic, 0) in (2, 3)
    wait_until(lambda: not cluster.partition_dir(1, topic, 0).exists(), 15,
               what="broker 1's replica deleted")
    assert cluster.partition_dir(3, topic, 0).is_dir()
    rc, out, _ = strom("reassign-partitions", "--bootstrap-server", bootstrap, "--list")
    assert (rc, out) == (0, "No partition reassignments found.\n")
    # the new replica set serves everything, old records included
    hw = cluster.high_watermark(topic, 0)
    assert len(read_partitions(bootstrap, topic, {0: hw})[0]) == hw


def test_add_broker_and_move_a_partition_onto_it(make_cluster, request):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient

    cluster = make_cluster(3, session_timeout_ms=3000)
    topic = "grow"
    create(cluster, topic, [[1, 2, 3], [2, 3, 1]])
    produce(cluster.bootstrap, topic, 100)

    new = cluster.add_broker(4)
    request.node._strom_brokers.append(new)
    cluster.wait_for_brokers({1, 2, 3, 4})

    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=15000)
    try:
        with BackgroundProducer(cluster.bootstrap, topic, partitions=2) as producer:
            producer.wait_for_acks(300, timeout=30)
            # broker 1, the leader of grow-0, leaves it: leadership moves to broker 4
            results = admin.alter_partition_reassignments(
                {KTopicPartition(topic, 0): [4, 2, 3]})
            assert results == {KTopicPartition(topic, 0): None}
            producer.wait_for_acks(300, timeout=30)
            wait_until(lambda: admin.list_partition_reassignments() == {}, 60,
                       what="no reassignment in progress")
            producer.wait_for_acks(300, timeout=30)
        check_acked(cluster, topic, producer)
    finally:
        admin.close()

    wait_until(lambda: metadata_replicas(cluster, topic, 0) == [4, 2, 3], 15,
               what="replicas [4, 2, 3] in Metadata")
    cluster.wait_for_isr(topic, 0, {2, 3, 4})
    assert cluster.leader_of(topic, 0) == 4
    assert metadata_replicas(cluster, topic, 1) == [2, 3, 1]
    wait_until(lambda: not cluster.partition_dir(1, topic, 0).exists(), 15,
               what="broker 1's replica deleted")
    assert cluster.partition_dir(1, topic, 1).is_dir()
    # the new replica holds the whole log, byte for byte as the others
    hw = cluster.high_watermark(topic, 0)
    wait_until(lambda: cluster.log_bytes(4, topic, 0, hw) == cluster.log_bytes(2, topic, 0, hw),
               15, what="broker 4's copy matches broker 2's")


def test_list_verify_and_cancel(make_cluster, tmp_path):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import NoReassignmentInProgressError

    cluster = make_cluster(3, session_timeout_ms=3000)
    bootstrap = cluster.bootstrap
    topic = "stuck"
    create(cluster, topic, [[1]])
    produce(bootstrap, topic, 20)
    # with its only replica down the partition has no leader, so a new replica cannot copy
    # it: a reassignment to broker 2 stays in progress
    cluster.stop(1)
    wait_until(lambda: cluster.leader_of(topic, 0) == -1, 15, what="stuck-0 offline")
    live = cluster.live_bootstrap()

    plan_file = write_json(tmp_path, "plan.json", plan({(topic, 0): [2]}))
    rc, out, err = strom("reassign-partitions", "--bootstrap-server", live, "--execute",
                         "--reassignment-json-file", plan_file)
    assert rc == 0, err
    assert out.endswith(f"Successfully started partition reassignment for {topic}-0\n")
    rc, out, _ = strom("reassign-partitions", "--bootstrap-server", live, "--list")
    assert (rc, out) == (0, "Current partition reassignments:\n"
                            f"{topic}-0: replicas: 2,1. adding: 2. removing: 1.\n")
    rc, out, _ = strom("reassign-partitions", "--bootstrap-server", live, "--verify",
                       "--reassignment-json-file", plan_file)
    assert (rc, out) == (0, "Status of partition reassignment:\n"
                            f"Reassignment of partition {topic}-0 is still in progress.\n")
    # --wait gives up after --wait-timeout-ms while the move cannot finish
    rc, out, err = strom("reassign-partitions", "--bootstrap-server", live, "--verify", "--wait",
                         "--wait-timeout-ms", "1500", "--reassignment-json-file", plan_file)
    assert rc == 1 and "1 of 1 partition moves still in progress after 1500 ms" in err, err
    # another --execute needs --additional while one is in progress
    other = write_json(tmp_path, "other.json", plan({(topic, 0): [3]}))
    rc, out, err = strom("reassign-partitions", "--bootstrap-server", live, "--execute",
                         "--reassignment-json-file", other)
    assert rc == 1 and err.startswith("Cannot execute because there is an existing partition "
                                      "assignment.  Use --additional")
    # allow_replication_factor_change=false (v1) counts the replicas before the move (1),
    # not the 2 listed while broker 2 is being added
    port = cluster.brokers[cluster.controller_id()].port
    assert alter_codes(raw(port, alter_request(
        {(topic, 0): [2]}, version=1, allow_replication_factor_change=False))) == \
        {(topic, 0): 0}
    assert alter_codes(raw(port, alter_request(
        {(topic, 0): [2, 3]}, version=1, allow_replication_factor_change=False))) == \
        {(topic, 0): INVALID_REPLICATION_FACTOR}

    rc, out, err = strom("reassign-partitions", "--bootstrap-server", live, "--cancel",
                         "--reassignment-json-file", plan_file)
    assert (rc, out) == (0, f"Successfully cancelled partition reassignment for: {topic}-0\n"), \
        err
    rc, out, _ = strom("reassign-partitions", "--bootstrap-server", live, "--list")
    assert (rc, out) == (0, "No partition reassignments found.\n")
    rc, out, _ = strom("reassign-partitions", "--bootstrap-server", live, "--cancel",
                       "--reassignment-json-file", plan_file)
    assert (rc, out) == (0, "None of the specified partition reassignments are active.\n")
    rc, out, _ = strom("reassign-partitions", "--bootstrap-server", live, "--verify",
                       "--reassignment-json-file", plan_file)
    assert out.endswith(f"There is no active reassignment of partition {topic}-0, but replica "
                        "set is 1 rather than 2.\n")
    # a cancel of nothing, sent as such: NO_REASSIGNMENT_IN_PROGRESS
    admin = KafkaAdminClient(bootstrap_servers=live, request_timeout_ms=15000)
    try:
        assert admin.alter_partition_reassignments({KTopicPartition(topic, 0): None}) == \
            {KTopicPartition(topic, 0): NoReassignmentInProgressError}
    finally:
        admin.close()
    assert metadata_replicas(cluster, topic, 0) == [1]
    wait_until(lambda: not cluster.partition_dir(2, topic, 0).exists(), 15,
               what="broker 2's abandoned replica deleted")

    cluster.brokers[1].start()
    assert cluster.wait_for_leader(topic, 0) == 1
    assert [v for _, _, v in read_partitions(bootstrap, topic, {0: 20})[0]] == \
        [b"%d" % i for i in range(20)]


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input(make_cluster, tmp_path):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import InvalidReplicationAssignmentError, UnknownTopicOrPartitionError

    cluster = make_cluster(3, session_timeout_ms=3000)
    bootstrap = cluster.bootstrap
    topic = "bad"
    create(cluster, topic, [[1, 2]])

    def tool(*argv):
        return strom("reassign-partitions", "--bootstrap-server", bootstrap, *argv)

    # the broker refuses an unknown broker: INVALID_REPLICA_ASSIGNMENT, shown by the tool
    unknown_broker = write_json(tmp_path, "unknown-broker.json", plan({(topic, 0): [2, 9]}))
    rc, out, err = tool("--execute", "--reassignment-json-file", unknown_broker)
    assert rc == 1
    assert err.startswith(f"Error reassigning partition(s):\n{topic}-0: "
                          "INVALID_REPLICA_ASSIGNMENT: ")
    assert "[9]" in err
    # what the tool itself refuses, before asking any broker
    dupes = write_json(tmp_path, "dupes.json", plan({(topic, 0): [2, 2]}))
    assert tool("--execute", "--reassignment-json-file", dupes)[::2] == (
        1, "Error: Partition replica lists may not contain duplicate entries: bad-0 contains "
           "multiple entries for 2\n")
    unknown_topic = write_json(tmp_path, "unknown-topic.json", plan({("nosuch", 0): [1]}))
    assert tool("--execute", "--reassignment-json-file", unknown_topic)[::2] == (
        1, "Error: Unable to find partition: nosuch-0\n")
    unknown_partition = write_json(tmp_path, "unknown-p.json", plan({(topic, 5): [1]}))
    assert tool("--execute", "--reassignment-json-file", unknown_partition)[::2] == (
        1, "Error: Unable to find partition: bad-5\n")
    empty = write_json(tmp_path, "empty.json", {"version": 1, "partitions": []})
    assert tool("--execute", "--reassignment-json-file", empty)[::2] == (
        1, "Error: Partition reassignment list cannot be empty\n")
    not_json = write_json(tmp_path, "not.json", "{partitions: [")
    rc, _, err = tool("--execute", "--reassignment-json-file", not_json)
    assert rc == 1 and err.startswith("Error: The reassignment JSON is not valid JSON")
    assert err.count("\n") == 1
    wrong_shape = write_json(tmp_path, "shape.json", {"partitions": [{"topic": topic}]})
    rc, _, err = tool("--verify", "--reassignment-json-file", wrong_shape)
    assert rc == 1 and err.count("\n") == 1
    log_dirs = write_json(tmp_path, "dirs.json", {"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [1, 2], "log_dirs": ["any"]}]})
    assert tool("--execute", "--reassignment-json-file", log_dirs)[::2] == (
        1, "Error: Size of replicas list [1, 2] is different from size of log dirs list "
           "[any] for partition bad-0\n")
    version = write_json(tmp_path, "version.json", {"version": 2, "partitions": []})
    assert tool("--verify", "--reassignment-json-file", version)[::2] == (
        1, "Error: Not supported version field value 2\n")
    rc, _, err = tool("--execute", "--reassignment-json-file", str(tmp_path / "missing.json"))
    assert rc == 1 and err.startswith("Error: cannot read ") and err.count("\n") == 1

    topics_file = write_json(tmp_path, "topics.json", {"topics": [{"topic": "nosuch"}]})
    assert tool("--generate", "--topics-to-move-json-file", topics_file,
                "--broker-list", "1,2")[::2] == (1, "Error: Topic nosuch not found.\n")
    topics_file = write_json(tmp_path, "topics2.json", {"topics": [{"topic": topic}]})
    assert tool("--generate", "--topics-to-move-json-file", topics_file,
                "--broker-list", "")[::2] == (1, "Error: --broker-list names no broker\n")
    assert tool("--generate", "--topics-to-move-json-file", topics_file,
                "--broker-list", "1,x")[0] == 1
    assert tool("--generate", "--topics-to-move-json-file", topics_file,
                "--broker-list", "1,1")[::2] == (
        1, "Error: Broker list contains duplicate entries: 1\n")
    assert tool("--generate", "--topics-to-move-json-file", topics_file,
                "--broker-list", "3")[::2] == (
        1, "Error: Replication factor: 2 larger than available brokers: 1.\n")
    # flags that do not fit the action
    assert tool("--execute")[::2] == (
        1, 'Error: Missing required argument "--reassignment-json-file" for --execute\n')
    assert tool("--execute", "--reassignment-json-file", dupes, "--broker-list", "1")[::2] == (
        1, 'Error: Option "--broker-list" can\'t be used with action "--execute"\n')
    assert tool("--generate", "--topics-to-move-json-file", topics_file)[0] == 1
    assert tool()[0] == 2  # no action
    assert tool("--list", "--verify")[0] == 2
    assert metadata_replicas(cluster, topic, 0) == [1, 2]

    def elect(*argv):
        return strom("leader-election", "--bootstrap-server", bootstrap, *argv)

    assert elect("--all-topic-partitions")[::2] == (
        1, "Error: Missing required option(s): --election-type\n")
    assert elect("--election-type", "preferred")[::2] == (
        1, "Error: One and only one of the following options is required: --topic, "
           "--all-topic-partitions, --path-to-json-file\n")
    assert elect("--election-type", "preferred", "--topic", topic,
                 "--all-topic-partitions")[0] == 1
    assert elect("--election-type", "preferred", "--topic", topic)[::2] == (
        1, "Error: Missing required option(s): --partition\n")
    assert elect("--election-type", "preferred", "--partition", "0",
                 "--all-topic-partitions")[::2] == (
        1, "Error: Option --partition is only allowed if --topic is used\n")
    assert elect("--election-type", "sideways", "--all-topic-partitions")[0] == 2
    twice = write_json(tmp_path, "twice.json", {"partitions": [
        {"topic": topic, "partition": 0}, {"topic": topic, "partition": 0}]})
    assert elect("--election-type", "preferred", "--path-to-json-file", twice)[::2] == (
        1, "Error: Replica election data contains duplicate partitions: bad-0\n")
    no_field = write_json(tmp_path, "nofield.json", {"topics": []})
    assert elect("--election-type", "preferred", "--path-to-json-file", no_field)[::2] == (
        1, 'Error: Replica election data is missing "partitions" field\n')
    rc, _, err = elect("--election-type", "preferred", "--path-to-json-file",
                       str(tmp_path / "missing.json"))
    assert rc == 1 and err.startswith("Error: cannot read ")

    # the broker's answers, to kafka-python's KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        tp = KTopicPartition(topic, 0)
        assert admin.alter_partition_reassignments({tp: [2, 9]}) == \
            {tp: InvalidReplicationAssignmentError}
        assert admin.alter_partition_reassignments({tp: [2, 2]}) == \
            {tp: InvalidReplicationAssignmentError}
        assert admin.alter_partition_reassignments({KTopicPartition("nosuch", 0): [1]}) == \
            {KTopicPartition("nosuch", 0): UnknownTopicOrPartitionError}
        assert admin.alter_partition_reassignments({KTopicPartition(topic, 4): [1]}) == \
            {KTopicPartition(topic, 4): UnknownTopicOrPartitionError}
        assert admin.list_partition_reassignments() == {}
        response = admin.elect_leaders(0, {topic: [0, 3]}, raise_errors=False)
        codes = {(r.topic, p.partition_id): p.error_code
                 for r in response.replica_election_results for p in r.partition_result}
        assert codes == {(topic, 0): ELECTION_NOT_NEEDED, (topic, 3): UNKNOWN_TOPIC_OR_PARTITION}
    finally:
        admin.close()

    # the same, raw: ElectLeaders for an unknown partition; a cancel of nothing
    controller = cluster.controller_id()
    port = cluster.brokers[controller].port
    response = raw(port, elect_request("nosuch", [0]))
    assert response.error_code == 0
    assert [(r.topic, p.partition_id, p.error_code) for r in response.replica_election_results
            for p in r.partition_result] == [("nosuch", 0, UNKNOWN_TOPIC_OR_PARTITION)]
    assert alter_codes(raw(port, alter_request({(topic, 0): None}))) == \
        {(topic, 0): NO_REASSIGNMENT_IN_PROGRESS}
    assert alter_codes(raw(port, alter_request({(topic, 0): [1, 9], (topic, 1): [1]}))) == \
        {(topic, 0): INVALID_REPLICA_ASSIGNMENT, (topic, 1): UNKNOWN_TOPIC_OR_PARTITION}
    # v1 with allow_replication_factor_change=false (KIP-860): a target of another size
    assert alter_codes(raw(port, alter_request(
        {(topic, 0): [1, 2, 3]}, version=1, allow_replication_factor_change=False))) == \
        {(topic, 0): INVALID_REPLICATION_FACTOR}

    # every broker but the controller answers NOT_CONTROLLER
    other = next(b for b in cluster.brokers if b != controller)
    port = cluster.brokers[other].port
    assert raw(port, elect_request(topic, [0])).error_code == NOT_CONTROLLER
    response = raw(port, alter_request({(topic, 0): [2, 3]}))
    assert response.error_code == NOT_CONTROLLER
    assert raw(port, list_request()).error_code == NOT_CONTROLLER
    assert metadata_replicas(cluster, topic, 0) == [1, 2]

    # the tool asks again after NOT_CONTROLLER, with the controller of fresh metadata
    tool_cluster = reassign_partitions._Cluster({"bootstrap.servers": bootstrap})
    asked = []

    def metadata():
        md = cluster.metadata()
        if not asked:
            md.controller_id = other  # as if the office had just moved
        asked.append(md.controller_id)
        return md
    tool_cluster.metadata = metadata
    assert tool_cluster.list_reassignments() == {}
    assert asked == [other, controller]
