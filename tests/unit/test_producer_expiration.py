"""Producer id expiration (issue 10, defect 9): a partition forgets an idempotent producer
producer.id.expiration.ms after the timestamp of its last batch, as Kafka's
ProducerStateManager.removeExpiredProducers, on the periodic check and on load; time comes
from a manual clock."""

from __future__ import annotations

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, ConfigError, TopicConfig
from strom.log.manager import LogManager
from strom.log.records import NewRecord, build_batch
from strom.protocol.batch import read_header
from strom.protocol.errors import OutOfOrderSequence

NOW = 1_700_000_000_000
EXPIRY = 60_000


def config(**broker: str) -> TopicConfig:
    return TopicConfig(BrokerConfig({"producer.id.expiration.ms": str(EXPIRY), **broker}))


def produce(plog, pid: int, seq: int, timestamp: int):
    data = bytearray(build_batch([NewRecord(b"v", timestamp=timestamp)], producer_id=pid,
                                 producer_epoch=0, base_sequence=seq))
    return plog.append_as_leader(data, read_header(data), 0)


def manager(tmp_path, clock) -> LogManager:
    logs = LogManager([str(tmp_path)], clock, node_id=1)
    logs.prepare_dirs()
    return logs


def test_producers_expire_after_the_timestamp_of_their_last_batch(tmp_path):
    clock = ManualClock(NOW)
    logs = manager(tmp_path, clock)
    plog = logs.get_or_create("t", 0, config(), None)
    for pid in range(100):  # client-chosen ids, each one batch
        produce(plog, pid, 0, NOW)
    clock.advance(EXPIRY // 2)
    produce(plog, 7, 1, clock.now_ms())  # producer 7 is still active
    assert logs.remove_expired_producers() == 0
    clock.advance(EXPIRY // 2 - 1)
    assert logs.remove_expired_producers() == 0  # 1 ms short of the expiration
    clock.advance(1)
    assert logs.remove_expired_producers() == 99  # Kafka: now - last timestamp >= expiry
    assert set(plog.producer_state.producers) == {7}
    # a forgotten producer is an unknown one: any sequence is accepted again
    produce(plog, 3, 42, clock.now_ms())
    with pytest.raises(OutOfOrderSequence):  # a remembered one still is checked
        produce(plog, 7, 5, clock.now_ms())
    logs.shutdown()


def test_expired_producers_are_not_rebuilt_on_load(tmp_path):
    clock = ManualClock(NOW)
    logs = manager(tmp_path, clock)
    plog = logs.get_or_create("t", 0, config(), None)
    produce(plog, 1, 0, NOW)
    produce(plog, 2, 0, NOW + EXPIRY)
    plog.fsync()
    plog.close()
    clock.advance(EXPIRY + 1)
    reopened = type(plog).open(plog.dir, "t", 0, config(), clock)
    assert set(reopened.producer_state.producers) == {2}
    reopened.close()
    logs.release_locks()


def test_expiration_configs_are_validated():
    assert BrokerConfig({}).get("producer.id.expiration.ms") == 86400000
    assert BrokerConfig({}).get("producer.id.expiration.check.interval.ms") == 600000
    for key in ("producer.id.expiration.ms", "producer.id.expiration.check.interval.ms"):
        with pytest.raises(ConfigError):
            BrokerConfig({key: "0"})
