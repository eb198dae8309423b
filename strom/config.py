"""Broker and topic configuration with Kafka's names, defaults and validation.

`BrokerConfig.load(path, overrides)` reads a `server.properties` file (Java properties
syntax) and `--override key=value` pairs. Unknown keys are logged as warnings and otherwise
ignored; invalid values raise `ConfigError` with the key and reason.

Topic configs (`retention.ms`, `segment.bytes`, ...) default to their broker synonyms
(`log.retention.ms`, `log.segment.bytes`, ...), as in Kafka. `TopicConfig` resolves a topic's
effective values and says where each came from (DescribeConfigs' `config_source`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from strom import properties
from strom.protocol.batch import TOPIC_COMPRESSION_TYPES

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """An invalid configuration value."""


class ConfigType(IntEnum):
    """DescribeConfigs' config_type values."""

    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


class ConfigSource(IntEnum):
    """DescribeConfigs' config_source values."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


@dataclass(frozen=True, slots=True)
class ConfigKey:
    name: str
    type: ConfigType
    default: Any
    doc: str = ""
    validator: Callable[[Any], str | None] | None = None  # returns an error text or None
    read_only: bool = True
    internal: bool = False  # as Kafka's defineInternal: DescribeConfigs shows it only if set


def at_least(n: float) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= n else f"must be at least {n}"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        values = v if isinstance(v, list) else [v]
        bad = [x for x in values if x not in choices]
        return f"must be one of {', '.join(choices)}" if bad else None

    return check


def parse_value(key: ConfigKey, raw: Any) -> Any:
    """Turn a string (or already typed) value into the key's type; raise ConfigError."""
    if raw is None:
        return None
    try:
        if key.type == ConfigType.BOOLEAN:
            if isinstance(raw, bool):
                value: Any = raw
            elif str(raw).strip().lower() in ("true", "false"):
                value = str(raw).strip().lower() == "true"
            else:
                raise ValueError("expected true or false")
        elif key.type in (ConfigType.INT, ConfigType.SHORT, ConfigType.LONG):
            value = int(str(raw).strip())
            limit = {ConfigType.SHORT: 15, ConfigType.INT: 31, ConfigType.LONG: 63}[key.type]
            if not -(1 << limit) <= value < (1 << limit):
                raise ValueError("out of range")
        elif key.type == ConfigType.DOUBLE:
            value = float(str(raw).strip())
        elif key.type == ConfigType.LIST:
            value = raw if isinstance(raw, list) else [
                s.strip() for s in str(raw).split(",") if s.strip()
            ]
        else:
            value = str(raw).strip()
    except ValueError as e:
        raise ConfigError(f"Invalid value {raw!r} for configuration {key.name}: {e}") from None
    if key.validator is not None:
        problem = key.validator(value)
        if problem:
            raise ConfigError(f"Invalid value {raw!r} for configuration {key.name}: {problem}")
    return value


def render(value: Any) -> str | None:
    """A config value as DescribeConfigs shows it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def parse_connection_overrides(text: str | None) -> dict[str, int]:
    """Kafka's 'host:count,host:count' (the last ':' separates, so IPv6 addresses work);
    raises ValueError with the reason."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, count = item.rpartition(":")
        host = host.strip().strip("[]")
        if not sep or not host:
            raise ValueError(f"expected host:count, got {item!r}")
        try:
            n = int(count.strip())
        except ValueError:
            raise ValueError(f"count of {host!r} is not an integer") from None
        if n < 0:
            raise ValueError(f"count of {host!r} must be at least 0")
        if not _valid_host(host):
            raise ValueError(f"invalid address {host!r}")
        out[host] = n
    return out


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label) and label.isascii()
        for label in labels)


def _connection_overrides(v: Any) -> str | None:
    try:
        parse_connection_overrides(v)
    except ValueError as e:
        return str(e)
    return None


# the names of Kafka's ACL authorizers, any of which switches on strom's
# (strom.security.authorizer)
AUTHORIZER_CLASS_NAMES = frozenset({
    "kafka.security.authorizer.AclAuthorizer",
    "kafka.security.auth.SimpleAclAuthorizer",
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "strom.security.authorizer.Authorizer",
})

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def parse_protocol_map(value: list[str] | None) -> dict[str, str]:
    """listener.security.protocol.map: ['CLIENT:SASL_SSL', ...] -> {'CLIENT': 'SASL_SSL'};
    unset, each security protocol's name maps to itself (Kafka's default). Raises
    ValueError."""
    if value is None:
        return {p: p for p in SECURITY_PROTOCOLS}
    out: dict[str, str] = {}
    for item in value:
        name, sep, protocol = item.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name:
            raise ValueError(f"expected NAME:PROTOCOL, got {item!r}")
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"unknown security protocol {protocol!r} for listener {name}")
        if name in out:
            raise ValueError(f"listener {name} is mapped twice")
        out[name] = protocol
    return out


def _protocol_map(v: Any) -> str | None:
    try:
        parse_protocol_map(v)
    except ValueError as e:
        return str(e)
    return None


B, S, I, L, D, LST = (  # noqa: E741
    ConfigType.BOOLEAN, ConfigType.STRING, ConfigType.INT, ConfigType.LONG,
                      ConfigType.DOUBLE, ConfigType.LIST)
_DAY_MS = 24 * 3600 * 1000
_TIMESTAMP_TYPES = one_of("CreateTime", "LogAppendTime")
_COMPRESSION = one_of(*TOPIC_COMPRESSION_TYPES)

def _metrics_listener(v: Any) -> str | None:
    if v is None:
        return None
    try:
        scheme, _, _ = parse_listener(v)
    except ConfigError as e:
        return str(e).replace("NAME://", "http://")
    return None if scheme == "HTTP" else "must be http://host:port"


BROKER_KEYS: dict[str, ConfigKey] = {k.name: k for k in [
    ConfigKey("node.id", I, -1, "The broker's id", at_least(-1)),
    ConfigKey("broker.id", I, -1, "Synonym of node.id", at_least(-1)),
    ConfigKey("listeners", LST, ["PLAINTEXT://127.0.0.1:9092"], "Addresses to listen on"),
    ConfigKey("advertised.listeners", LST, None, "Addresses given to clients"),
    ConfigKey("log.dirs", LST, None, "Directories for partition data"),
    ConfigKey("log.dir", S, "strom-data", "Data directory when log.dirs is not set"),
    ConfigKey("num.partitions", I, 1, "Default partitions of new topics", at_least(1)),
    ConfigKey("default.replication.factor", I, 1, "Default replication factor", at_least(1)),
    ConfigKey("auto.create.topics.enable", B, True, "Create topics on first use"),
    ConfigKey("delete.topic.enable", B, True, "Allow topic deletion"),
    ConfigKey("log.segment.bytes", I, 1073741824, "Segment size", at_least(14)),
    ConfigKey("log.roll.ms", L, None, "Segment roll time (ms)", at_least(1)),
    ConfigKey("log.roll.hours", I, 168, "Segment roll time (hours)", at_least(1)),
    ConfigKey("log.roll.jitter.ms", L, None, "Accepted; strom does not jitter rolls",
              at_least(0)),
    ConfigKey("log.roll.jitter.hours", I, 0, "Accepted; strom does not jitter rolls",
              at_least(0)),
    ConfigKey("log.retention.ms", L, None, "Retention time (ms), -1 for none"),
    ConfigKey("log.retention.minutes", I, None, "Retention time (minutes)"),
    ConfigKey("log.retention.hours", I, 168, "Retention time (hours)"),
    ConfigKey("log.retention.bytes", L, -1, "Retention size per partition, -1 for none"),
    ConfigKey("log.retention.check.interval.ms", L, 300000, "Retention check period",
              at_least(1)),
    ConfigKey("log.index.interval.bytes", I, 4096, "Bytes between index entries", at_least(0)),
    ConfigKey("log.index.size.max.bytes", I, 10485760, "Index file size", at_least(4)),
    ConfigKey("log.flush.interval.messages", L, (1 << 63) - 1, "Fsync every N messages",
              at_least(1)),
    ConfigKey("log.flush.interval.ms", L, None, "Fsync every N ms", at_least(0)),
    ConfigKey("log.flush.scheduler.interval.ms", L, (1 << 63) - 1, "Flush check period"),
    ConfigKey("log.flush.offset.checkpoint.interval.ms", I, 60000, "Checkpoint period",
              at_least(0)),
    ConfigKey("log.segment.delete.delay.ms", L, 60000, "Delay before deleting a segment",
              at_least(0)),
    ConfigKey("log.cleanup.policy", LST, ["delete"], "delete or compact",
              one_of("delete", "compact")),
    ConfigKey("log.message.timestamp.type", S, "CreateTime", "CreateTime or LogAppendTime",
              _TIMESTAMP_TYPES),
    ConfigKey("log.message.timestamp.before.max.ms", L, (1 << 63) - 1, "", at_least(0)),
    ConfigKey("log.message.timestamp.after.max.ms", L, 3600000, "", at_least(0)),
    ConfigKey("log.cleaner.delete.retention.ms", L, _DAY_MS, "", at_least(0)),
    ConfigKey("log.cleaner.min.compaction.lag.ms", L, 0, "", at_least(0)),
    ConfigKey("log.cleaner.max.compaction.lag.ms", L, (1 << 63) - 1, "", at_least(1)),
    ConfigKey("log.cleaner.min.cleanable.ratio", D, 0.5, "", at_least(0)),
    ConfigKey("log.cleaner.enable", B, True, "Run the log cleaner (compaction of "
              "cleanup.policy=compact topics, including __consumer_offsets)"),
    ConfigKey("log.cleaner.threads", I, 1, "Cleaner threads", at_least(0)),
    ConfigKey("log.cleaner.dedupe.buffer.size", L, 134217728, "Memory for the cleaners' "
              "key maps, shared by all cleaner threads", at_least(1)),
    ConfigKey("log.cleaner.io.buffer.size", I, 524288, "Accepted for compatibility",
              at_least(0)),
    ConfigKey("log.cleaner.io.buffer.load.factor", D, 0.9, "Accepted for compatibility; "
              "the key map is full at 0.9 of its memory"),
    ConfigKey("log.cleaner.io.max.bytes.per.second", D, 1.7976931348623157e308,
              "Read and write rate limit of the cleaners together"),
    ConfigKey("log.cleaner.backoff.ms", L, 15000, "Sleep of a cleaner thread when no log "
              "needs cleaning", at_least(0)),
    ConfigKey("log.preallocate", B, False, ""),
    ConfigKey("log.page.cache.window.bytes", L, 64 << 20, "strom only: newest bytes of "
              "each segment left in the OS page cache; older written bytes are written back "
              "and dropped from it. -1 leaves caching to the OS, as Kafka", at_least(-1)),
    ConfigKey("message.max.bytes", I, 1048588, "Largest record batch", at_least(0)),
    ConfigKey("socket.request.max.bytes", I, 104857600, "Largest request", at_least(1)),
    ConfigKey("socket.send.buffer.bytes", I, 102400, ""),
    ConfigKey("socket.receive.buffer.bytes", I, 102400, ""),
    ConfigKey("compression.type", S, "producer", "", _COMPRESSION),
    ConfigKey("min.insync.replicas", I, 1, "", at_least(1)),
    ConfigKey("unclean.leader.election.enable", B, False, ""),
    ConfigKey("replica.lag.time.max.ms", L, 30000, "", at_least(0)),
    ConfigKey("num.network.threads", I, 3, "Accepted for compatibility", at_least(1)),
    ConfigKey("num.io.threads", I, 8, "Accepted for compatibility", at_least(1)),
    ConfigKey("num.recovery.threads.per.data.dir", I, 2, "", at_least(1)),
    ConfigKey("offsets.topic.num.partitions", I, 50, "Partitions of __consumer_offsets",
              at_least(1)),
    ConfigKey("offsets.topic.segment.bytes", I, 104857600, "Segment size of "
              "__consumer_offsets", at_least(1)),
    ConfigKey("offsets.retention.minutes", I, 10080, "How long offsets of an empty group "
              "are kept", at_least(1)),
    ConfigKey("offsets.retention.check.interval.ms", L, 600000, "", at_least(1)),
    ConfigKey("offsets.commit.timeout.ms", I, 5000, "How long an offset commit waits for "
              "the ISR of __consumer_offsets", at_least(1)),
    ConfigKey("offset.metadata.max.bytes", I, 4096, "Largest commit metadata string",
              at_least(0)),
    ConfigKey("group.min.session.timeout.ms", I, 6000, "", at_least(0)),
    ConfigKey("group.max.session.timeout.ms", I, 1800000, "", at_least(0)),
    ConfigKey("group.max.size", I, 2147483647, "Most members in one group", at_least(1)),
    ConfigKey("group.consumer.heartbeat.interval.ms", I, 5000, "Heartbeat interval given "
              "to consumer-protocol members", at_least(1)),
    ConfigKey("group.consumer.session.timeout.ms", I, 45000, "Session timeout of "
              "consumer-protocol members", at_least(1)),
    ConfigKey("group.consumer.max.size", I, 2147483647, "Most members in one consumer "
              "group", at_least(1)),
    ConfigKey("group.consumer.assignors", LST, ["uniform", "range"], "Server-side assignors",
              one_of("uniform", "range")),
    ConfigKey("offsets.topic.replication.factor", ConfigType.SHORT, 3, "", at_least(1)),
    ConfigKey("transaction.state.log.num.partitions", I, 50, "", at_least(1)),
    ConfigKey("transaction.state.log.replication.factor", ConfigType.SHORT, 3, "",
              at_least(1)),
    ConfigKey("transaction.state.log.min.isr", I, 2, "min.insync.replicas of "
              "__transaction_state (capped at its replication factor)", at_least(1)),
    ConfigKey("transaction.state.log.segment.bytes", I, 104857600, "Segment size of "
              "__transaction_state", at_least(1)),
    ConfigKey("transaction.max.timeout.ms", I, 900000, "Largest transaction timeout a "
              "producer may ask for", at_least(1)),
    ConfigKey("transaction.abort.timed.out.transaction.cleanup.interval.ms", I, 10000,
              "Period of the check that aborts transactions past their timeout",
              at_least(1)),
    ConfigKey("transaction.remove.expired.transaction.cleanup.interval.ms", I, 3600000,
              "Period of the check that expires idle transactional ids", at_least(1)),
    ConfigKey("transaction.partition.verification.enable", B, True, "Verify with the "
              "transaction coordinator that a partition is in the transaction before a "
              "transactional batch is appended (KIP-890)"),
    ConfigKey("transactional.id.expiration.ms", I, 604800000, "How long a transactional "
              "id with no transaction is kept", at_least(1)),
    ConfigKey("producer.id.expiration.ms", I, _DAY_MS, "How long a partition keeps the "
              "state of an idempotent producer after the timestamp of its last batch",
              at_least(1)),
    ConfigKey("producer.id.expiration.check.interval.ms", I, 600000, "Period of the "
              "producer id expiration check", at_least(1), internal=True),
    ConfigKey("zookeeper.connect", S, None, "ZooKeeper connection string (host:port[,..][/chroot]); "
              "unset: the single-broker local metadata store"),
    ConfigKey("zookeeper.session.timeout.ms", I, 18000, "ZooKeeper session timeout",
              at_least(1)),
    ConfigKey("zookeeper.connection.timeout.ms", I, None, "How long to wait for ZooKeeper at "
              "start (default: the session timeout)", at_least(1)),
    ConfigKey("inter.broker.listener.name", S, None, "Listener other brokers connect "
              "through (default: the listener named by security.inter.broker.protocol when "
              "that is set, else the first listener)"),
    ConfigKey("security.inter.broker.protocol", S, None, "Security protocol between "
              "brokers, when inter.broker.listener.name is unset",
              one_of(*SECURITY_PROTOCOLS)),
    ConfigKey("listener.security.protocol.map", LST, None, "listener name:security "
              "protocol pairs (default: each protocol's own name maps to itself)",
              _protocol_map),
    ConfigKey("sasl.enabled.mechanisms", LST, ["GSSAPI"], "SASL mechanisms served "
              "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER; GSSAPI is not served)"),
    ConfigKey("sasl.mechanism.inter.broker.protocol", S, "GSSAPI", "SASL mechanism brokers "
              "use between themselves"),
    ConfigKey("sasl.jaas.config", ConfigType.PASSWORD, None, "JAAS login context (the "
              "listener.name.<l>.<mechanism>.sasl.jaas.config form is preferred)"),
    ConfigKey("sasl.oauthbearer.jwks.endpoint.url", S, None, "JWKS of the identity "
              "provider (file: or http(s): URL): OAUTHBEARER tokens must be signed by it"),
    ConfigKey("sasl.oauthbearer.expected.audience", LST, None, ""),
    ConfigKey("sasl.oauthbearer.expected.issuer", S, None, ""),
    ConfigKey("sasl.oauthbearer.sub.claim.name", S, "sub", ""),
    ConfigKey("sasl.oauthbearer.scope.claim.name", S, "scope", ""),
    ConfigKey("sasl.oauthbearer.clock.skew.seconds", I, 30, "", at_least(0)),
    ConfigKey("sasl.server.callback.handler.class", ConfigType.CLASS, None, "Accepted: "
              "OAUTHBEARER tokens are checked against the JWKS when "
              "sasl.oauthbearer.jwks.endpoint.url is set"),
    ConfigKey("sasl.server.max.receive.size", I, 524288, "Largest frame read before a "
              "SASL client is authenticated", at_least(1)),
    ConfigKey("connection.failed.authentication.delay.ms", I, 100, "How long a connection "
              "whose authentication failed stays open (answered) before it is closed",
              at_least(0)),
    ConfigKey("connections.max.reauth.ms", L, 0, "Longest SASL session before the client "
              "must re-authenticate (KIP-368; 0: never)", at_least(0)),
    ConfigKey("ssl.keystore.type", S, "JKS", "", one_of("JKS", "PKCS12", "PEM")),
    ConfigKey("ssl.keystore.location", S, None, "Key and certificate file (PEM or PKCS12)"),
    ConfigKey("ssl.keystore.password", ConfigType.PASSWORD, None, ""),
    ConfigKey("ssl.key.password", ConfigType.PASSWORD, None, ""),
    ConfigKey("ssl.keystore.certificate.chain", ConfigType.PASSWORD, None,
              "PEM certificate chain (with ssl.keystore.key, in place of a file)"),
    ConfigKey("ssl.keystore.key", ConfigType.PASSWORD, None, "PEM private key"),
    ConfigKey("ssl.truststore.type", S, "JKS", "", one_of("JKS", "PKCS12", "PEM")),
    ConfigKey("ssl.truststore.location", S, None, "Trusted CA certificates (PEM or PKCS12)"),
    ConfigKey("ssl.truststore.password", ConfigType.PASSWORD, None, ""),
    ConfigKey("ssl.truststore.certificates", ConfigType.PASSWORD, None,
              "PEM CA certificates (in place of a file)"),
    ConfigKey("ssl.client.auth", S, "none", "Client certificates: required, requested, none",
              one_of("required", "requested", "none")),
    ConfigKey("ssl.enabled.protocols", LST, ["TLSv1.2", "TLSv1.3"], "",
              one_of("TLSv1.2", "TLSv1.3")),
    ConfigKey("ssl.protocol", S, "TLSv1.3", ""),
    ConfigKey("ssl.cipher.suites", LST, [], "OpenSSL or IANA names (TLS 1.2); empty: "
              "OpenSSL's defaults"),
    ConfigKey("ssl.endpoint.identification.algorithm", S, "https", "Inter-broker clients "
              "check the host name of the broker's certificate ('https'), or not (empty)"),
    ConfigKey("ssl.principal.mapping.rules", S, "DEFAULT", "Certificate subject to user "
              "name rules (RULE:pattern/replacement/[LU], DEFAULT)"),
    ConfigKey("max.incremental.fetch.session.cache.slots", I, 1000, "Incremental fetch "
              "sessions the broker keeps (KIP-227)", at_least(0)),
    ConfigKey("replica.fetch.max.bytes", I, 1048576, "Bytes per partition a follower asks "
              "for", at_least(0)),
    ConfigKey("replica.fetch.response.max.bytes", I, 10485760, "Bytes per follower fetch",
              at_least(0)),
    ConfigKey("replica.fetch.wait.max.ms", I, 500, "Longest wait of a follower fetch",
              at_least(0)),
    ConfigKey("replica.fetch.min.bytes", I, 1, "Least bytes a follower fetch waits for",
              at_least(1)),
    ConfigKey("replica.fetch.backoff.ms", I, 1000, "Pause after a failed follower fetch",
              at_least(0)),
    ConfigKey("replica.socket.timeout.ms", I, 30000, "Follower request timeout",
              at_least(1)),
    ConfigKey("num.replica.fetchers", I, 1, "Accepted; one fetcher per leader broker",
              at_least(1)),
    ConfigKey("auto.leader.rebalance.enable", B, True, "Move leadership back to preferred "
              "replicas"),
    ConfigKey("leader.imbalance.check.interval.seconds", L, 300, "", at_least(1)),
    ConfigKey("leader.imbalance.per.broker.percentage", I, 10, "", at_least(0)),
    ConfigKey("controlled.shutdown.max.retries", I, 3, "", at_least(0)),
    ConfigKey("controlled.shutdown.retry.backoff.ms", L, 5000, "", at_least(0)),
    ConfigKey("broker.rack", S, None, "Rack of this broker"),
    ConfigKey("metrics.listener", S, None, "strom only: http://host:port of the Prometheus "
              "endpoint (/metrics, /healthz, /readyz); off when unset", _metrics_listener),
    ConfigKey("metrics.partition.level", B, True, "strom only: emit the per-partition "
              "series (kafka_cluster_partition_*, kafka_log_log_*); false on brokers with "
              "very many partitions"),
    ConfigKey("cluster.id", S, None, "Cluster id (generated when absent)"),
    ConfigKey("controlled.shutdown.enable", B, True, ""),
    ConfigKey("group.initial.rebalance.delay.ms", I, 3000, "", at_least(0)),
    ConfigKey("connections.max.idle.ms", L, 600000, "Idle connections are closed after "
              "this long (negative: never)"),
    ConfigKey("max.connections", I, 2147483647, "Most connections the broker serves at "
              "once; more wait (inter-broker ones excepted)", at_least(0)),
    ConfigKey("max.connections.per.ip", I, 2147483647, "Most connections from one address; "
              "more are closed at once", at_least(0)),
    ConfigKey("max.connections.per.ip.overrides", S, "", "Per-address limits, "
              "host:count,host:count", _connection_overrides),
    ConfigKey("authorizer.class.name", S, "", "The authorizer; Kafka's AclAuthorizer and "
              "StandardAuthorizer names switch on strom's ACL authorizer (empty: none)"),
    ConfigKey("super.users", S, "", "Principals allowed everything, User:a;User:b"),
    ConfigKey("allow.everyone.if.no.acl.found", B, False, "Allow a resource no ACL covers"),
    ConfigKey("quota.window.num", I, 11, "Samples kept to measure client quotas",
              at_least(1)),
    ConfigKey("quota.window.size.seconds", I, 1, "Time of each client quota sample",
              at_least(1)),
    ConfigKey("controller.quota.window.num", I, 11, "Samples of the controller mutation "
              "quota: its token bucket holds rate x samples x sample time", at_least(1)),
    ConfigKey("controller.quota.window.size.seconds", I, 1, "Time of each controller "
              "mutation quota sample", at_least(1)),
    ConfigKey("queued.max.request.bytes", L, -1, "Bytes of requests read and not yet "
              "handled, across connections, before no more are read (-1: unbounded)"),
]}

# topic config -> (broker synonym(s), in precedence order)
TOPIC_SYNONYMS: dict[str, tuple[str, ...]] = {
    "cleanup.policy": ("log.cleanup.policy",),
    "compression.type": ("compression.type",),
    "delete.retention.ms": ("log.cleaner.delete.retention.ms",),
    "file.delete.delay.ms": ("log.segment.delete.delay.ms",),
    "flush.messages": ("log.flush.interval.messages",),
    "flush.ms": ("log.flush.interval.ms", "log.flush.scheduler.interval.ms"),
    "index.interval.bytes": ("log.index.interval.bytes",),
    "max.compaction.lag.ms": ("log.cleaner.max.compaction.lag.ms",),
    "max.message.bytes": ("message.max.bytes",),
    "message.timestamp.type": ("log.message.timestamp.type",),
    "message.timestamp.before.max.ms": ("log.message.timestamp.before.max.ms",),
    "message.timestamp.after.max.ms": ("log.message.timestamp.after.max.ms",),
    "min.cleanable.dirty.ratio": ("log.cleaner.min.cleanable.ratio",),
    "min.compaction.lag.ms": ("log.cleaner.min.compaction.lag.ms",),
    "min.insync.replicas": ("min.insync.replicas",),
    "preallocate": ("log.preallocate",),
    "retention.bytes": ("log.retention.bytes",),
    "retention.ms": ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
    "segment.bytes": ("log.segment.bytes",),
    "segment.index.bytes": ("log.index.size.max.bytes",),
    "segment.jitter.ms": ("log.roll.jitter.ms", "log.roll.jitter.hours"),
    "segment.ms": ("log.roll.ms", "log.roll.hours"),
    "unclean.leader.election.enable": ("unclean.leader.election.enable",),
}

TOPIC_KEYS: dict[str, ConfigKey] = {k.name: k for k in [
    ConfigKey("cleanup.policy", LST, ["delete"], "", one_of("delete", "compact")),
    ConfigKey("compression.type", S, "producer", "", _COMPRESSION),
    ConfigKey("delete.retention.ms", L, _DAY_MS, "", at_least(0)),
    ConfigKey("file.delete.delay.ms", L, 60000, "", at_least(0)),
    ConfigKey("flush.messages", L, (1 << 63) - 1, "", at_least(1)),
    ConfigKey("flush.ms", L, (1 << 63) - 1, "", at_least(0)),
    ConfigKey("index.interval.bytes", I, 4096, "", at_least(0)),
    ConfigKey("max.compaction.lag.ms", L, (1 << 63) - 1, "", at_least(1)),
    ConfigKey("max.message.bytes", I, 1048588, "", at_least(0)),
    ConfigKey("message.timestamp.type", S, "CreateTime", "", _TIMESTAMP_TYPES),
    ConfigKey("message.timestamp.before.max.ms", L, (1 << 63) - 1, "", at_least(0)),
    ConfigKey("message.timestamp.after.max.ms", L, 3600000, "", at_least(0)),
    ConfigKey("min.cleanable.dirty.ratio", D, 0.5, "",
              lambda v: None if 0 <= v <= 1 else "must be between 0 and 1"),
    ConfigKey("min.compaction.lag.ms", L, 0, "", at_least(0)),
    ConfigKey("min.insync.replicas", I, 1, "", at_least(1)),
    ConfigKey("preallocate", B, False, ""),
    ConfigKey("retention.bytes", L, -1, ""),
    ConfigKey("retention.ms", L, 7 * _DAY_MS, "", at_least(-1)),
    ConfigKey("segment.bytes", I, 1073741824, "", at_least(14)),
    ConfigKey("segment.index.bytes", I, 10485760, "", at_least(4)),
    ConfigKey("segment.jitter.ms", L, 0, "", at_least(0)),
    ConfigKey("segment.ms", L, 7 * _DAY_MS, "", at_least(1)),
    ConfigKey("unclean.leader.election.enable", B, False, ""),
]}
for _k in TOPIC_KEYS.values():
    object.__setattr__(_k, "read_only", False)


class BrokerConfig:
    """The broker's static configuration. `values` holds only keys that were set."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values: dict[str, Any] = {}
        self.unknown: dict[str, str] = {}
        for name, raw in values.items():
            key = BROKER_KEYS.get(name)
            if key is None:
                self.unknown[name] = str(raw)
                continue
            self.values[name] = parse_value(key, raw)
        # dynamic layers, kept by strom.cluster.broker_configs (parsed values): the
        # broker's own /config/brokers/<id> over the cluster-wide /config/brokers/<default>,
        # both over server.properties, as in Kafka
        self.dynamic_broker: dict[str, Any] = {}
        self.dynamic_default: dict[str, Any] = {}
        self._validate()

    @classmethod
    def load(cls, path: str | None = None, overrides: Iterable[str] = ()) -> BrokerConfig:
        values: dict[str, str] = {}
        if path:
            try:
                values.update(properties.load(path))
            except OSError as e:
                raise ConfigError(f"Cannot read {path}: {e.strerror}") from None
            except properties.PropertiesError as e:
                raise ConfigError(f"Cannot read {path}: {e}") from None
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--override takes key=value, got {item!r}")
            k, v = item.split("=", 1)
            values[k.strip()] = v.strip()
        config = cls(values)
        for name in config.unknown:
            if not name.startswith("listener.name."):  # read by for_listener
                log.warning("Unknown configuration %r is ignored", name)
        return config

    def layers(self) -> tuple[tuple[dict[str, Any], ConfigSource], ...]:
        """The set values by source, in precedence order (dynamic per-broker, dynamic
        cluster default, server.properties)."""
        return ((self.dynamic_broker, ConfigSource.DYNAMIC_BROKER_CONFIG),
                (self.dynamic_default, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
                (self.values, ConfigSource.STATIC_BROKER_CONFIG))

    def get(self, name: str) -> Any:
        for layer, _ in self.layers():
            if name in layer:
                return layer[name]
        return BROKER_KEYS[name].default

    def source(self, name: str) -> ConfigSource:
        for layer, source in self.layers():
            if name in layer:
                return source
        return ConfigSource.DEFAULT_CONFIG

    def _validate(self) -> None:
        nid, bid = self.values.get("node.id"), self.values.get("broker.id")
        if nid is not None and bid is not None and nid != bid and min(nid, bid) >= 0:
            raise ConfigError(f"node.id ({nid}) and broker.id ({bid}) disagree")
        for name in ("listeners", "advertised.listeners"):
            for listener in self.get(name) or []:
                try:
                    parse_listener(listener)
                except ConfigError as e:
                    raise ConfigError(f"Invalid value for configuration {name}: {e}") from None
        protocols = parse_protocol_map(self.get("listener.security.protocol.map"))
        names = [parse_listener(x)[0] for x in self.get("listeners")]
        for name in names:
            if name not in protocols:
                raise ConfigError(f"No security protocol defined for listener {name} in "
                                  "listener.security.protocol.map")
        if self.get("inter.broker.listener.name") and \
                self.get("security.inter.broker.protocol"):
            raise ConfigError("Only one of inter.broker.listener.name and "
                              "security.inter.broker.protocol should be set.")
        if self.inter_broker_listener() not in names:
            raise ConfigError(f"inter.broker.listener.name must be a listener name defined in "
                              f"listeners: {self.inter_broker_listener()} is not")
        queued = self.get("queued.max.request.bytes")
        if 0 < queued < self.get("socket.request.max.bytes"):
            raise ConfigError("Invalid value for configuration queued.max.request.bytes: must "
                              "be at most 0 (unbounded) or at least socket.request.max.bytes "
                              f"({self.get('socket.request.max.bytes')}), got {queued}")
        if self.get("max.connections.per.ip") == 0 and \
                not self.get("max.connections.per.ip.overrides"):
            raise ConfigError("Invalid value 0 for configuration max.connections.per.ip: it "
                              "can be 0 only if max.connections.per.ip.overrides is set")
        authorizer = self.get("authorizer.class.name")
        if authorizer and authorizer not in AUTHORIZER_CLASS_NAMES:
            raise ConfigError(
                f"Invalid value {authorizer!r} for configuration authorizer.class.name: "
                f"strom's ACL authorizer is named by any of "
                f"{', '.join(sorted(AUTHORIZER_CLASS_NAMES))}")
        if self.get("message.max.bytes") > self.get("socket.request.max.bytes"):
            log.warning("message.max.bytes is larger than socket.request.max.bytes")

    # --- derived values -------------------------------------------------------------
    @property
    def node_id(self) -> int:
        nid = max(self.values.get("node.id", -1), self.values.get("broker.id", -1))
        return nid if nid >= 0 else 1

    @property
    def log_dirs(self) -> list[str]:
        return self.get("log.dirs") or [self.get("log.dir")]

    def listeners(self) -> list[tuple[str, str, int]]:
        return [parse_listener(x) for x in self.get("listeners")]

    def security_protocol(self, listener: str) -> str:
        """The security protocol of a listener (listener.security.protocol.map)."""
        return parse_protocol_map(self.get("listener.security.protocol.map"))[listener]

    def inter_broker_listener(self) -> str:
        """The listener brokers use between themselves: inter.broker.listener.name, else
        the listener named as security.inter.broker.protocol, else the first listener."""
        name = self.get("inter.broker.listener.name") or \
            self.get("security.inter.broker.protocol")
        return name.upper() if name else self.listeners()[0][0]

    def for_listener(self, listener: str, name: str, mechanism: str | None = None) -> Any:
        """A config for one listener, as Kafka reads it: 'listener.name.<listener>.[<sasl
        mechanism>.]<name>' (lower-case names) first, then '[<mechanism>.]<name>' for a
        mechanism's own key, then the plain key."""
        prefix = f"listener.name.{listener.lower()}."
        keys = [f"{prefix}{mechanism.lower()}.{name}"] if mechanism else []
        keys.append(prefix + name)
        for key in keys:
            if key in self.unknown:
                return parse_value(BROKER_KEYS[name], self.unknown[key]) \
                    if name in BROKER_KEYS else self.unknown[key]
        return self.get(name) if name in BROKER_KEYS else None

    def advertised(self) -> list[tuple[str, str, int]]:
        return [parse_listener(x) for x in (self.get("advertised.listeners")
                                             or self.get("listeners"))]

    def broker_default(self, topic_key: str) -> tuple[Any, ConfigSource, str | None]:
        """A topic key's default from its broker synonyms: (value, source, synonym)."""
        for synonym in TOPIC_SYNONYMS.get(topic_key, ()):
            # as Kafka, on the merged layers: the first synonym set anywhere wins
            for layer, source in self.layers():
                if synonym in layer and layer[synonym] is not None:
                    return _from_synonym(synonym, layer[synonym]), source, synonym
        return TOPIC_KEYS[topic_key].default, ConfigSource.DEFAULT_CONFIG, None


def _from_synonym(synonym: str, value: Any) -> Any:
    if synonym.startswith("log.retention.") and synonym != "log.retention.bytes" and \
            value is not None and value < 0:
        return -1  # as Kafka's logRetentionTimeMillis: any negative time means no limit
    if synonym.endswith(".hours"):
        return value * 3600 * 1000
    if synonym.endswith(".minutes"):
        return value * 60 * 1000
    return value


def parse_listener(text: str) -> tuple[str, str, int]:
    """'PLAINTEXT://host:port' -> ('PLAINTEXT', host, port); an empty host is 0.0.0.0."""
    m = re.fullmatch(r"([A-Za-z0-9_]+)://\[?([^\]]*?)\]?:(\d+)", text.strip())
    if not m:
        raise ConfigError(f"Invalid listener {text!r}: expected NAME://host:port")
    port = int(m.group(3))
    if not 0 <= port <= 65535:
        raise ConfigError(f"Invalid listener {text!r}: port out of range")
    return m.group(1).upper(), m.group(2), port


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, Any]:
    """Parse topic config overrides; unknown keys and bad values raise ConfigError."""
    parsed: dict[str, Any] = {}
    for name, raw in configs.items():
        key = TOPIC_KEYS.get(name)
        if key is None:
            raise ConfigError(f"Unknown topic config name: {name}")
        if raw is None:
            raise ConfigError(f"Null value not supported for topic configs: {name}")
        parsed[name] = parse_value(key, raw)
    return parsed


class TopicConfig:
    """A topic's effective configuration: its overrides over the broker's defaults.

    `TopicConfig.of(broker, stored)` is the one way the broker builds it from a topic's
    stored overrides (the strings of `/config/topics/<topic>`); each value not overridden
    comes from the first broker synonym that is set (`TOPIC_SYNONYMS`: `retention.ms` from
    `log.retention.ms`, `log.retention.minutes` or `log.retention.hours`, ...), else from
    Kafka's default.
    """

    def __init__(self, broker: BrokerConfig, overrides: Mapping[str, Any] | None = None) -> None:
        self.broker = broker
        self.overrides: dict[str, Any] = dict(overrides or {})
        # resolved once: produce and fetch read several of these per request
        self._values: dict[str, Any] = {
            name: self.overrides[name] if name in self.overrides else self.broker_value(name)
            for name in TOPIC_KEYS}
        for name, value in self._values.items():
            setattr(self, name.replace(".", "_"), value)
        # what every append asks
        self.compact: bool = "compact" in self._values["cleanup.policy"]
        self.log_append_time: bool = \
            self._values["message.timestamp.type"] == "LogAppendTime"

    @classmethod
    def of(cls, broker: BrokerConfig, stored: Mapping[str, str | None] | None = None
           ) -> TopicConfig:
        """The effective config of a topic whose stored overrides are `stored` (None or
        empty: the broker's defaults). Raises ConfigError for an unknown key or bad value."""
        return cls(broker, validate_topic_configs(stored or {}))

    def synonyms(self, name: str) -> list[tuple[str, str | None, ConfigSource]]:
        """DescribeConfigs' synonyms of topic config `name`, in precedence order: the
        override, the broker synonyms set dynamically for this broker, for the cluster,
        and in server.properties (as given there), and the first synonym's default."""
        out: list[tuple[str, str | None, ConfigSource]] = []
        if name in self.overrides:
            out.append((name, render(self.overrides[name]), ConfigSource.DYNAMIC_TOPIC_CONFIG))
        for layer, source in self.broker.layers():
            for synonym in TOPIC_SYNONYMS.get(name, ()):
                if synonym in layer:
                    out.append((synonym, render(layer[synonym]), source))
        first = TOPIC_SYNONYMS.get(name, (name,))[0]
        if first in BROKER_KEYS and BROKER_KEYS[first].default is not None:
            out.append((first, render(BROKER_KEYS[first].default), ConfigSource.DEFAULT_CONFIG))
        return out

    def get(self, name: str) -> Any:
        return self._values[name]

    def broker_value(self, name: str) -> Any:
        return self.broker.broker_default(name)[0]

    def source(self, name: str) -> ConfigSource:
        if name in self.overrides:
            return ConfigSource.DYNAMIC_TOPIC_CONFIG
        return self.broker.broker_default(name)[1]

