"""strom.protocol.client.BrokerConnection against a real strom broker (ApiVersions v3,
Metadata v12, Fetch v12 after a confluent-kafka produce, concurrent requests on one
connection), and its failure modes (refused, closed, killed broker, and fake servers on
127.0.0.1 that answer with a wrong correlation id, hang up mid-frame, never answer, or
send collection lengths of billions).

Each test runs its own event loop with `asyncio.run`, under an overall `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import datetime
import struct

import pytest
from confluent_kafka import Producer

from strom.protocol.client import BrokerConnection, BrokerConnectionError
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.broker import free_port
from strom.testing.kafka import create_topic
from strom.testing.wire import split_batches

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def api_versions(version: int = 3):
    return make(request_schema(18, version), client_software_name="strom-test",
                client_software_version="0.0.1")


def metadata(topics: list[str] | None = None, version: int = 12):
    mod = request_module(3, version)
    return make(request_schema(3, version),
                topics=None if topics is None else tuple(
                    make(mod.MetadataRequestTopic, name=t, topic_id=None) for t in topics),
                allow_auto_topic_creation=False, include_topic_authorized_operations=False,
                include_cluster_authorized_operations=False)


def fetch(topic: str, partition: int = 0, offset: int = 0, *, max_wait_ms: int = 0,
          min_bytes: int = 1, version: int = 12):
    mod = request_module(1, version)
    return make(request_schema(1, version), cluster_id=None, replica_id=-1,
                max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes,
                max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                topics=(make(mod.FetchTopic, topic=topic, partitions=(make(
                    mod.FetchPartition, partition=partition, current_leader_epoch=-1,
                    fetch_offset=offset, last_fetched_epoch=-1, log_start_offset=-1,
                    partition_max_bytes=1 << 20),)),),
                forgotten_topics_data=(), rack_id="")


def produce(bootstrap: str, topic: str, n: int, partition: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, value=b"value-%d" % i, key=b"k", partition=partition)
    assert p.flush(15) == 0


async def wait_until(cond, timeout: float = 10.0) -> None:
    """Yield to the event loop until `cond()` holds; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def connected(broker, **kwargs) -> BrokerConnection:
    conn = BrokerConnection(HOST, broker.port, client_id="strom-client-test", **kwargs)
    assert conn.closed
    await conn.connect()
    assert not conn.closed
    return conn


# --- against a real broker ----------------------------------------------------------------

def test_api_versions_v3(module_broker):
    async def main():
        conn = await connected(module_broker)
        try:
            resp = await conn.request(api_versions(3))
        finally:
            await conn.close()
        assert conn.closed
        return resp

    resp = run(main())
    assert resp.error_code == ErrorCode.none
    keys = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert keys[18][1] >= 3
    assert keys[1][0] <= 12 <= keys[1][1]
    assert keys[3][0] <= 12 <= keys[3][1]
    assert keys[23] == (2, 4), "OffsetForLeaderEpoch must be advertised"


def test_metadata_v12(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 2)

    async def main():
        conn = await connected(module_broker)
        try:
            return await conn.request(metadata([topic_name]))
        finally:
            await conn.close()

    resp = run(main())
    assert [(b.host, b.port) for b in resp.brokers] == [(HOST, module_broker.port)]
    (topic,) = resp.topics
    assert topic.name == topic_name and topic.error_code == ErrorCode.none
    assert sorted(p.partition_index for p in topic.partitions) == [0, 1]
    assert all(p.leader_id == resp.brokers[0].node_id for p in topic.partitions)


def test_fetch_v12_returns_record_bytes(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name)
    produce(module_broker.bootstrap, topic_name, 5)

    async def main():
        conn = await connected(module_broker)
        try:
            return await conn.request(fetch(topic_name))
        finally:
            await conn.close()

    resp = run(main())
    assert resp.error_code == ErrorCode.none
    (topic,) = resp.responses
    (part,) = topic.partitions
    assert topic.topic == topic_name
    assert part.error_code == ErrorCode.none and part.high_watermark == 5
    assert isinstance(part.records, bytes)
    batches, trailing = split_batches(part.records)
    assert trailing == 0 and batches
    assert batches[0][0] == 0 and batches[-1][1] == 4


def test_concurrent_requests_on_one_connection(module_broker, topic_name):
    """A long-poll parked until a record arrives first, then quick requests behind it: every
    caller gets the response to its own request, in order."""
    create_topic(module_broker.bootstrap, topic_name)
    produce(module_broker.bootstrap, topic_name, 3)

    async def main():
        conn = await connected(module_broker)
        try:
            # parks: no data yet, and answered by the record produced below (not by max_wait)
            requests = [fetch(topic_name, offset=3, max_wait_ms=20000)]
            for i in range(30):
                requests.append([api_versions(3), metadata([topic_name]),
                                 fetch(topic_name, offset=i % 3), api_versions(0)][i % 4])
            pending = asyncio.gather(*(conn.request(r) for r in requests))
            await asyncio.to_thread(produce, module_broker.bootstrap, topic_name, 1)
            return requests, await pending
        finally:
            await conn.close()

    requests, responses = run(main())
    for req, resp in zip(requests, responses, strict=True):
        assert type(resp).__api_key__ == type(req).__api_key__
        assert type(resp).__version__ == type(req).__version__
    # a long poll answered before any data arrived would hold no record
    batches, _ = split_batches(responses[0].responses[0].partitions[0].records or b"")
    assert batches and batches[0][0] == 3, "the long poll was answered without the record"
    for req, resp in zip(requests[1:], responses[1:], strict=True):
        if type(req).__api_key__ == 1:
            offset = req.topics[0].partitions[0].fetch_offset
            batches, _ = split_batches(resp.responses[0].partitions[0].records)
            assert batches and batches[0][0] <= offset <= batches[0][1]


def test_request_on_closed_connection_raises(module_broker):
    async def main():
        conn = BrokerConnection(HOST, module_broker.port)
        with pytest.raises(ConnectionError):
            await conn.request(api_versions())  # never connected
        await conn.connect()
        await conn.close()
        await conn.close()  # twice is fine
        request = conn.request(api_versions())
        with pytest.raises(ConnectionError, match="not open"):
            request.send(None)  # raised at once, on the first step: nothing is awaited
        await conn.connect()  # and it can be opened again
        try:
            assert (await conn.request(api_versions())).error_code == ErrorCode.none
        finally:
            await conn.close()

    run(main())


def test_refused_connection_raises_quickly():
    port = free_port()

    async def main():
        conn = BrokerConnection(HOST, port, timeout_s=10)
        with pytest.raises(BrokerConnectionError, match=f"{HOST}:{port}") as e:
            await conn.connect()
        assert isinstance(e.value, ConnectionError)
        # refused by the kernel, not given up on after timeout_s
        assert isinstance(e.value.__cause__, ConnectionRefusedError)
        assert "timed out" not in str(e.value)
        assert conn.closed

    run(main())


def test_broker_dies_under_a_parked_fetch(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)

    async def main():
        conn = await connected(broker)
        try:
            pending = [asyncio.ensure_future(conn.request(fetch(topic_name, max_wait_ms=20000)))
                       for _ in range(3)]
            # scenario only, not synchronisation: whether or not the broker has parked the
            # fetches yet, the kill must fail each of them with the lost connection
            await asyncio.sleep(0.3)
            await asyncio.to_thread(broker.kill)
            for fut in pending:
                # failed by the lost connection, not by the client's timeout
                with pytest.raises(ConnectionError, match="closed by|failed") as e:
                    await fut
                assert "timed out" not in str(e.value)
            assert conn.closed
            with pytest.raises(ConnectionError):
                await conn.request(api_versions())
        finally:
            await conn.close()

    run(main())


# --- against fake servers -----------------------------------------------------------------

async def fake_server(handle):
    """A TCP server on 127.0.0.1 that reads request frames and calls
    `handle(correlation_id, writer)` for each."""

    async def on_client(reader, writer):
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
                correlation_id = struct.unpack_from(">i", frame, 4)[0]
                await handle(correlation_id, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


def api_versions_v0_answer(correlation_id: int) -> bytes:
    body = struct.pack(">ihi", correlation_id, 0, 1) + struct.pack(">hhh", 18, 0, 3)
    return struct.pack(">i", len(body)) + body


def test_correlation_id_mismatch_closes_the_connection():
    async def handle(correlation_id, writer):
        writer.write(api_versions_v0_answer(correlation_id + 1))

    async def main():
        server, port = await fake_server(handle)
        async with server:
            conn = BrokerConnection(HOST, port)
            await conn.connect()
            first = asyncio.ensure_future(conn.request(api_versions(0)))
            second = asyncio.ensure_future(conn.request(api_versions(0)))
            with pytest.raises(ConnectionError, match="correlation id mismatch"):
                await first
            with pytest.raises(ConnectionError):
                await second
            assert conn.closed
            await conn.close()

    run(main())


def test_good_answers_from_a_fake_server():
    async def handle(correlation_id, writer):
        writer.write(api_versions_v0_answer(correlation_id))

    async def main():
        server, port = await fake_server(handle)
        async with server:
            conn = BrokerConnection(HOST, port)
            await conn.connect()
            try:
                resps = await asyncio.gather(*(conn.request(api_versions(0))
                                               for _ in range(5)))
            finally:
                await conn.close()
        assert all([(k.api_key, k.max_version) for k in r.api_keys] == [(18, 3)]
                   for r in resps)

    run(main())


def test_eof_mid_frame_closes_the_connection():
    async def handle(correlation_id, writer):
        writer.write(api_versions_v0_answer(correlation_id)[:7])
        await writer.drain()
        writer.close()

    async def main():
        server, port = await fake_server(handle)
        async with server:
            conn = BrokerConnection(HOST, port)
            await conn.connect()
            with pytest.raises(ConnectionError, match="closed by"):
                await conn.request(api_versions(0))
            assert conn.closed
            await conn.close()

    run(main())


def test_garbage_response_closes_the_connection():
    async def handle(correlation_id, writer):
        body = struct.pack(">i", correlation_id) + b"\x00\x00\xff\xff\xff\x7f"
        writer.write(struct.pack(">i", len(body)) + body)

    async def main():
        server, port = await fake_server(handle)
        async with server:
            conn = BrokerConnection(HOST, port)
            await conn.connect()
            with pytest.raises(ConnectionError, match="malformed response"):
                await conn.request(metadata())
            assert conn.closed
            await conn.close()

    run(main())


def test_no_answer_times_out():
    async def handle(correlation_id, writer):
        pass  # never answers

    async def main():
        server, port = await fake_server(handle)
        async with server:
            conn = BrokerConnection(HOST, port, timeout_s=0.5)
            await conn.connect()
            with pytest.raises(ConnectionError, match=r"timed out after 0\.5 s"):
                await conn.request(api_versions(0))
            assert conn.closed
            await conn.close()

    run(main())


def test_cancelled_request_keeps_later_responses_matched():
    """A caller that gives up does not shift the responses of the requests behind it."""

    async def main():
        release = asyncio.Event()
        received: list[int] = []
        answers: list[asyncio.Task] = []

        async def handle(correlation_id, writer):
            # answered in arrival order once released; the next request is read meanwhile
            async def answer():
                await release.wait()
                writer.write(api_versions_v0_answer(correlation_id))

            received.append(correlation_id)
            answers.append(asyncio.ensure_future(answer()))

        server, port = await fake_server(handle)
        async with server:
            conn = BrokerConnection(HOST, port)
            await conn.connect()
            try:
                first = asyncio.ensure_future(conn.request(api_versions(0)))
                await wait_until(lambda: len(received) == 1)
                first.cancel()
                second = asyncio.ensure_future(conn.request(api_versions(0)))
                await wait_until(lambda: len(received) == 2)
                release.set()
                resp = await second
                assert resp.error_code == ErrorCode.none
                assert not conn.closed
            finally:
                await conn.close()

    run(main())


# A leader (or any broker strom's client talks to) that answers with collection lengths of
# billions: kio's native reader sized the collection from the prefix before reading it, the
# allocation failed and the process aborted (the requests side was guarded by
# strom.protocol.bounds, the responses side was not). Run in a child process, so that an
# abort fails the test instead of ending the test run.
def _huge_length_answers() -> None:
    answers = iter([
        # Metadata v12 (flexible): brokers, a compact array of 2^35 - 2 elements
        lambda cid: struct.pack(">ib", cid, 0) + struct.pack(">i", 0)
        + bytes.fromhex("ffffffff7f") + bytes(8),
        # OffsetForLeaderEpoch v4 (flexible, as a follower could ask): topics, the same
        lambda cid: struct.pack(">ib", cid, 0) + struct.pack(">i", 0)
        + bytes.fromhex("ffffffff7f") + bytes(8),
        # Metadata v12 cut short in its cluster id
        lambda cid: struct.pack(">ib", cid, 0) + struct.pack(">i", 0) + b"\x01" + b"\x20ab",
    ])

    async def handle(correlation_id, writer):
        answer = next(answers, None)
        body = answer(correlation_id) if answer else api_versions_v0_answer(correlation_id)[4:]
        writer.write(struct.pack(">i", len(body)) + body)

    async def main():
        server, port = await fake_server(handle)
        epoch_mod = request_module(23, 4)
        epoch_request = make(request_schema(23, 4), replica_id=2, topics=(make(
            epoch_mod.OffsetForLeaderTopic, topic="t", partitions=(make(
                epoch_mod.OffsetForLeaderPartition, partition=0, current_leader_epoch=1,
                leader_epoch=1),)),))
        async with server:
            for request in (metadata(), epoch_request, metadata()):
                conn = BrokerConnection(HOST, port)
                await conn.connect()
                with pytest.raises(BrokerConnectionError, match="malformed response"):
                    await conn.request(request)
                assert conn.closed
                await conn.close()
            conn = BrokerConnection(HOST, port)  # and the next connection works
            await conn.connect()
            r = await conn.request(api_versions(0))
            await conn.close()
        assert [(k.api_key, k.max_version) for k in r.api_keys] == [(18, 3)]
        print("survived")

    run(main())


def test_huge_lengths_in_responses_do_not_abort_the_process():
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    code = "from tests.integration.test_broker_client import _huge_length_answers as f; f()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=root, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "survived", \
        f"exit {done.returncode}: {done.stdout[-500:]} {done.stderr[-1500:]}"
