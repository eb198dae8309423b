"""The cluster metadata model and its znode encodings (Kafka's ZooKeeper layout).

    /cluster/id                              {"version":"1","id":"<cluster id>"}
    /controller                              {"version":2,"brokerid":1,"timestamp":"..."}
    /controller_epoch                        "3"
    /brokers/ids/<id>                        {"version":5,"host":..,"port":..,"endpoints":[..],
                                              "listener_security_protocol_map":{..},"rack":..}
    /brokers/topics/<t>                      {"version":3,"topic_id":"..","partitions":{"0":[1,2]},
                                              "adding_replicas":{},"removing_replicas":{}}
    /brokers/topics/<t>/partitions/<p>/state {"controller_epoch":1,"leader":1,"version":1,
                                              "leader_epoch":0,"isr":[1,2]}
    /config/topics/<t>                       {"version":1,"config":{"retention.ms":"1000"}}
    /config/brokers/<id>, /config/brokers/<default>
                                             {"version":1,"config":{"log.retention.ms":"1000"}}
    /admin/delete_topics/<t>                 (empty)
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from strom.log.checkpoint import topic_id_from_str, topic_id_to_str

CLUSTER_ID = "/cluster/id"
CONTROLLER = "/controller"
CONTROLLER_EPOCH = "/controller_epoch"
BROKER_IDS = "/brokers/ids"
TOPICS = "/brokers/topics"
TOPIC_CONFIGS = "/config/topics"
BROKER_CONFIGS = "/config/brokers"
BROKER_DEFAULT = "<default>"  # Kafka's entity name of the cluster-wide broker default
DELETE_TOPICS = "/admin/delete_topics"
# KIP-112: a broker whose log dir failed writes an event here for the controller
LOG_DIR_EVENT_NOTIFICATION = "/log_dir_event_notification"
LOG_DIR_FAILURE_EVENT = 1

NO_LEADER = -1


def log_dir_event_path(broker_id: int, dir_index: int) -> str:
    """One node per failed dir of a broker (Kafka: a sequential `log_dir_event_<seq>`)."""
    return f"{LOG_DIR_EVENT_NOTIFICATION}/log_dir_event_{broker_id}_{dir_index}"


def encode_log_dir_event(broker_id: int, partitions: list[tuple[str, int]]) -> bytes:
    """Kafka's `{"version":1,"broker":<id>,"event":1}`, plus the partitions the failed dir
    held (Kafka's controller learns them from the broker's LeaderAndIsr answers)."""
    return json.dumps({"version": 1, "broker": broker_id, "event": LOG_DIR_FAILURE_EVENT,
                       "partitions": [[t, p] for t, p in sorted(partitions)]}).encode()


def decode_log_dir_event(data: bytes) -> tuple[int, list[tuple[str, int]]]:
    """(broker id, the partitions of its failed dir)."""
    d = json.loads(data)
    return int(d["broker"]), [(str(t), int(p)) for t, p in d.get("partitions", [])]


def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS}/{broker_id}"


def topic_path(topic: str) -> str:
    return f"{TOPICS}/{topic}"


def partitions_path(topic: str) -> str:
    return f"{TOPICS}/{topic}/partitions"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{TOPICS}/{topic}/partitions/{partition}/state"


def topic_config_path(topic: str) -> str:
    return f"{TOPIC_CONFIGS}/{topic}"


def broker_config_path(broker: int | None) -> str:
    """/config/brokers/<id>, or the cluster-wide default's node for None."""
    return f"{BROKER_CONFIGS}/{BROKER_DEFAULT if broker is None else broker}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    listener: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    endpoints: tuple[Endpoint, ...]
    rack: str | None = None

    def to_json(self) -> bytes:
        first = self.endpoints[0]
        return json.dumps({
            "version": 5,
            "host": first.host,
            "port": first.port,
            "endpoints": [f"{e.listener}://{e.host}:{e.port}" for e in self.endpoints],
            "listener_security_protocol_map": {e.listener: "PLAINTEXT" for e in self.endpoints},
            "jmx_port": -1,
            "rack": self.rack,
            "timestamp": str(int(time.time() * 1000)),
        }).encode()

    @classmethod
    def from_json(cls, broker_id: int, data: bytes) -> BrokerInfo:
        d = json.loads(data)
        endpoints = []
        for text in d.get("endpoints", []):
            name, rest = text.split("://", 1)
            host, port = rest.rsplit(":", 1)
            endpoints.append(Endpoint(name, host.strip("[]"), int(port)))
        return cls(broker_id, tuple(endpoints), d.get("rack"))


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Leader, ISR and epochs of one partition; `version` is its znode version (for CAS)."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0
    version: int = -1

    def to_json(self) -> bytes:
        return json.dumps({"controller_epoch": self.controller_epoch, "leader": self.leader,
                           "version": 1, "leader_epoch": self.leader_epoch,
                           "isr": list(self.isr)}).encode()

    @classmethod
    def from_json(cls, data: bytes, version: int) -> PartitionState:
        d = json.loads(data)
        return cls(d["leader"], d["leader_epoch"], tuple(d["isr"]), d.get("controller_epoch", 0),
                   version)


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    """A topic's id and replica assignment (/brokers/topics/<t>)."""

    name: str
    topic_id: uuid.UUID
    replicas: dict[int, tuple[int, ...]]
    version: int = -1
    # an ongoing reassignment (KIP-455): replicas being added / removed per partition
    adding: dict[int, tuple[int, ...]] = field(default_factory=dict)
    removing: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({
            "version": 3,
            "topic_id": topic_id_to_str(self.topic_id),
            "partitions": {str(p): list(r) for p, r in sorted(self.replicas.items())},
            "adding_replicas": {str(p): list(r) for p, r in sorted(self.adding.items())},
            "removing_replicas": {str(p): list(r) for p, r in sorted(self.removing.items())},
        }).encode()

    @classmethod
    def from_json(cls, name: str, data: bytes, version: int) -> TopicAssignment:
        d = json.loads(data)
        return cls(name, topic_id_from_str(d["topic_id"]),
                   {int(p): tuple(r) for p, r in d["partitions"].items()}, version,
                   {int(p): tuple(r) for p, r in (d.get("adding_replicas") or {}).items()},
                   {int(p): tuple(r) for p, r in (d.get("removing_replicas") or {}).items()})

    def target(self, partition: int) -> tuple[int, ...]:
        """The replicas a partition ends with (its reassignment's target, if any)."""
        removing = self.removing.get(partition, ())
        return tuple(b for b in self.replicas[partition] if b not in removing)


def encode_topic_config(configs: dict[str, str]) -> bytes:
    return json.dumps({"version": 1, "config": configs}).encode()


def decode_topic_config(data: bytes) -> dict[str, str]:
    return dict(json.loads(data).get("config", {}))


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    replicas: tuple[int, ...]
    state: PartitionState

    @property
    def leader(self) -> int:
        return self.state.leader

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def isr(self) -> tuple[int, ...]:
        return self.state.isr


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partitions: dict[int, PartitionInfo]
    configs: dict[str, str] = field(default_factory=dict)
    reassigning: frozenset[int] = frozenset()  # partitions with a reassignment in progress

    @property
    def is_internal(self) -> bool:
        return self.name in ("__consumer_offsets", "__transaction_state")
