"""The metrics endpoint of a real broker, driven by real clients: each metric moves when
its event happens (produce, fetch, a committed offset behind the end, a topic deleted), the
endpoint answers while clients work, and a port in use stops start-up with a clear error."""

from __future__ import annotations

import socket

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from strom.testing.broker import BrokerProcess, BrokerStartError
from strom.testing.cluster import wait_until
from strom.testing.kafka import create_topic, delete_topic
from strom.testing.metrics import http_get, matching, scrape, value
from strom.testing.processes import free_port

pytestmark = pytest.mark.timeout(120)

BT = "kafka_server_brokertopicmetrics_"


@pytest.fixture
def metrics_broker(start_broker):
    return start_broker({"metrics.listener": f"http://127.0.0.1:{free_port()}",
                         "group.initial.rebalance.delay.ms": 0})


def test_produce_fetch_and_lag_move_their_metrics(metrics_broker, topic_name):
    b = metrics_broker
    port = b.metrics_port
    assert http_get(port, "/healthz")[0] == 200
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, what="ready")
    topic = create_topic(b.bootstrap, topic_name, partitions=1)
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(20):
        producer.produce(topic, b"v" * 50, key=str(i).encode())
        producer.flush(10)  # one request each
    before = scrape(port)
    assert value(before, BT + "messagesin_total", topic=topic) == 20
    assert value(before, BT + "bytesin_total", topic=topic) > 20 * 50
    assert value(before, BT + "messagesin_total") >= 20  # the broker-wide series
    assert value(before, BT + "totalproducerequests_total", topic=topic) == 20
    assert value(before, "kafka_topic_partition_current_offset", topic=topic,
                 partition="0") == 20
    produce = matching(before, "kafka_network_requestmetrics_requests_total",
                       request="Produce")
    assert sum(produce.values()) >= 20
    assert value(before, "kafka_network_requestmetrics_totaltimems_count",
                 request="Produce") >= 20
    assert value(before, "strom_network_request_total_time_seconds_count",
                 request="Produce") >= 20

    # a group commits offset 5 of 20: lag 15; after reading to the end and committing: 0
    consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"{topic}-g",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        group = {"consumergroup": f"{topic}-g", "topic": topic, "partition": "0"}
        mid = scrape(port)
        assert value(mid, "kafka_consumergroup_lag", **group) == 15
        assert value(mid, "kafka_consumergroup_current_offset", **group) == 5
        consumer.subscribe([topic])
        read = 0
        while read < 15:
            msg = consumer.poll(10)
            assert msg is not None, "consumer got nothing"
            if not msg.error():
                read += 1
        consumer.commit(asynchronous=False)
        after = scrape(port)
        assert value(after, "kafka_consumergroup_lag", **group) == 0
        assert value(after, "kafka_consumergroup_members",
                     consumergroup=f"{topic}-g") == 1
        assert value(after, BT + "bytesout_total", topic=topic) > 15 * 50
        assert value(after, BT + "totalfetchrequests_total", topic=topic) >= 1
    finally:
        consumer.close()

    delete_topic(b.bootstrap, topic)
    wait_until(lambda: value(scrape(port), BT + "messagesin_total", topic=topic) is None,
               15, what="the deleted topic's series to go")
    gone = scrape(port)
    assert value(gone, BT + "messagesin_total") >= 20  # the total keeps its count
    assert not matching(gone, "kafka_log_log_size", topic=topic)


def test_uncommitted_assigned_partitions_lag_minus_one_and_transaction_metrics(
        metrics_broker, topic_name):
    """A subscribed consumer that has committed nothing: each assigned partition shows
    current_offset and lag -1 (kafka_exporter's signal to alert on); a committed
    transaction shows in the transaction coordinator's metrics."""
    b = metrics_broker
    port = b.metrics_port
    topic = create_topic(b.bootstrap, topic_name, partitions=2)
    group = f"{topic}-idle"
    consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "latest"})
    try:
        consumer.subscribe([topic])
        wait_until(lambda: bool(consumer.poll(0.2) or consumer.assignment()), 30,
                   what="an assignment")
        for partition in ("0", "1"):
            labels = {"consumergroup": group, "topic": topic, "partition": partition}
            wait_until(lambda labels=labels: value(scrape(port), "kafka_consumergroup_lag",
                                                   **labels) == -1, 15, what="lag -1")
            assert value(scrape(port), "kafka_consumergroup_current_offset", **labels) == -1
    finally:
        consumer.close()

    producer = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": f"{topic}-tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"in a transaction", partition=0)
    producer.commit_transaction(30)
    # EndTxn is answered once PrepareCommit is written; the markers follow
    wait_until(lambda: value(scrape(port), "strom_transaction_coordinator_transactions",
                             state="COMPLETE_COMMIT") == 1, 15, what="the commit completed")
    out = scrape(port)
    assert value(out, "kafka_server_transaction_coordinator_metrics_partition_load_time_max") \
        is not None
    assert value(out, "kafka_coordinator_transaction_transactionmarkerchannelmanager_"
                      "unknowndestinationqueuesize") == 0


def test_bad_http_input_leaves_the_kafka_listener_working(metrics_broker, topic_name):
    b = metrics_broker
    port = b.metrics_port
    assert http_get(port, "/no/such/path")[0] == 404
    held = []
    for payload in (b"\x16\x03\x01 not http\r\n\r\n", b"GET /metrics HTTP/1.1\r\n"):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(payload)
        held.append(s)  # the second one never finishes its head: a slowloris
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", port))
        held.append(s)
    try:
        topic = create_topic(b.bootstrap, topic_name)
        producer = Producer({"bootstrap.servers": b.bootstrap})
        producer.produce(topic, b"still served")
        assert producer.flush(15) == 0
    finally:
        for s in held:
            s.close()
    wait_until(lambda: http_get(port, "/metrics")[0] == 200, 15, what="metrics again")


def test_metrics_port_in_use_is_a_clear_start_up_error():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    b = BrokerProcess(overrides={"metrics.listener": f"http://127.0.0.1:{port}"},
                      startup_timeout=15)
    try:
        with pytest.raises(BrokerStartError):
            b.start()
        text = b.log_text(current_run_only=True)
        assert "metrics.listener" in text and "Traceback" not in text, text[-2000:]
    finally:
        b.close()
        holder.close()


def test_scrapes_while_the_broker_starts_and_stops_answer_or_are_refused():
    """Scrapes running all along a broker's start and its shutdown each get an answer
    (200, or 503 from /readyz before it is ready) or a refused connection: none hangs."""
    import threading
    import urllib.error

    port = free_port()
    b = BrokerProcess(overrides={"metrics.listener": f"http://127.0.0.1:{port}"})
    outcomes: list[object] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for path in ("/readyz", "/metrics"):
                try:
                    outcomes.append(http_get(port, path, timeout=5)[0])
                except (ConnectionError, urllib.error.URLError) as e:
                    reason = getattr(e, "reason", e)
                    outcomes.append("timeout" if isinstance(reason, TimeoutError)
                                    else "refused")
                except TimeoutError:
                    outcomes.append("timeout")

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        b.start()
        wait_until(lambda: 200 in outcomes, 15, what="a ready answer")
        b.stop()
    finally:
        stop.set()
        poller.join(15)
        b.close()
    assert not poller.is_alive()
    assert "timeout" not in outcomes, outcomes
    assert set(outcomes) <= {200, 503, "refused"}, set(outcomes)
    assert 200 in outcomes and "refused" in outcomes
