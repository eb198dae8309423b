"""Transactions V2 (KIP-890 part 2) across brokers: two brokers, a partition led by each,
so one leader adds its partition to the transaction with AddPartitionsToTxn v5 to the
coordinator on the other broker (Produce v12, no client AddPartitionsToTxn), and the
coordinator writes the markers (at the bumped epoch) to both leaders. A committed and an
aborted transaction; confluent-kafka read_committed sees exactly the committed records."""

from __future__ import annotations

import asyncio

import pytest

from strom.protocol.client import BrokerConnection
from strom.protocol.errors import ErrorCode
from strom.testing.txn_clients import read_to_end
from strom.testing.txn_v2 import V2Producer, end_retrying, init_producer_id, req

pytestmark = pytest.mark.timeout(120)

TOPIC = "txn-v2"
TXN_ID = "v2-cluster"


async def find_coordinator(conns: dict[int, BrokerConnection]) -> BrokerConnection:
    """The coordinator's connection, once `__transaction_state` has a loaded leader."""
    for _ in range(150):
        found = await conns[1].request(req(10, 4, key_type=1, coordinator_keys=(TXN_ID,)))
        c = found.coordinators[0]
        if c.error_code == ErrorCode.none and c.node_id in conns:
            r = await conns[c.node_id].request(req(
                10, 4, key_type=1, coordinator_keys=(TXN_ID,)))
            if r.coordinators[0].node_id == c.node_id:
                return conns[c.node_id]
        await asyncio.sleep(0.2)
    raise AssertionError("no transaction coordinator")


def test_v2_partitions_added_by_leaders_on_two_brokers(make_cluster):
    cluster = make_cluster(2, overrides={"transaction.state.log.num.partitions": 1,
                                         "offsets.topic.num.partitions": 1})
    cluster.create_topic(TOPIC, 2, 1, assignment=[[1], [2]])

    async def main():
        conns = {n: BrokerConnection("127.0.0.1", b.port) for n, b in cluster.brokers.items()}
        for c in conns.values():
            await c.connect()
        try:
            coordinator = await find_coordinator(conns)
            pid, e0 = await init_producer_id(coordinator, TXN_ID)
            p = V2Producer({0: conns[1], 1: conns[2]}, TXN_ID, TOPIC, pid, e0)
            for partition in (0, 1):
                assert await p.send(partition, [f"c-{partition}".encode()]) == 0
            r = await end_retrying(coordinator, TXN_ID, pid, e0, True)
            assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, e0 + 1)
            p.bumped(pid, e0 + 1)
            for partition in (0, 1):
                # the leader holds this epoch's batch until the previous transaction's
                # marker is written (NOT_ENOUGH_REPLICAS, retried by send)
                assert await p.send(partition, [f"a-{partition}".encode()]) == 0
            r = await end_retrying(coordinator, TXN_ID, pid, e0 + 1, False)
            assert (r.error_code, r.producer_epoch) == (0, e0 + 2)
        finally:
            for c in conns.values():
                await c.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert sorted(read_to_end(cluster.bootstrap, TOPIC, 2, True, timeout=30)) == \
        [b"c-0", b"c-1"]
    assert sorted(read_to_end(cluster.bootstrap, TOPIC, 2, False, timeout=30)) == \
        [b"a-0", b"a-1", b"c-0", b"c-1"]
