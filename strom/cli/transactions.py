"""Describe and abort transactions (like Kafka's kafka-transactions.sh).

Commands, as Kafka's tool names them:
  list                     every transactional id of the cluster (ListTransactions to each
                           broker): TransactionalId, Coordinator, ProducerId, TransactionState
  describe                 one transactional id, from its coordinator (DescribeTransactions)
      --transactional-id ID
  describe-producers       the producers a partition's leader knows (DescribeProducers)
      --topic T --partition P [--broker-id B: ask that replica instead]
  find-hanging             open transactions on a broker's partitions that are older than
      --broker-id B        --max-transaction-timeout (minutes, default 15) and that their
      [--topic T [--partition P]]  coordinator no longer has open on that partition
  abort                    write an ABORT marker for a hanging transaction (WriteTxnMarkers
      --topic T --partition P   to the partition's leader), found by its first offset
      --start-offset O          (--start-offset) or given as --producer-id, --producer-epoch
                                and --coordinator-epoch

The tables are printed with columns padded as Kafka's tool pads them. Talks to the
brokers over PLAINTEXT with strom's own client (kio requests).

examples:
  strom transactions --bootstrap-server localhost:9092 list
  strom transactions describe --transactional-id orders-app-1
  strom transactions find-hanging --broker-id 1
  strom transactions abort --topic orders --partition 0 --start-offset 1042
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

from strom.cli._common import (
    ToolError,
    add_bootstrap_argument,
    add_command_config_argument,
    broker_request,
    client_config,
    client_errors,
    error_text,
)

TIMEOUT = 30.0
CLIENT_ID = "transactions-tool"
FIND_COORDINATOR, LIST_TXNS, DESCRIBE_TXNS, DESCRIBE_PRODUCERS, WRITE_MARKERS = \
    10, 66, 65, 61, 27


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    add_command_config_argument(parser)
    sub = parser.add_subparsers(dest="action", metavar="COMMAND")
    sub.required = True
    commands = {name: sub.add_parser(name, help=text)
                for name, text in (
                    ("list", "list transactions"),
                    ("describe", "describe one transaction"),
                    ("describe-producers", "describe a partition's producers"),
                    ("find-hanging", "find hanging transactions"),
                    ("abort", "abort a hanging transaction"))}
    for command in commands.values():  # also accepted after the command
        command.add_argument("--bootstrap-server", default=argparse.SUPPRESS,
                             help="as before the command")
        command.add_argument("--command-config", default=argparse.SUPPRESS,
                             help="as before the command")
    d = commands["describe"]
    d.add_argument("--transactional-id", required=True)
    dp = commands["describe-producers"]
    dp.add_argument("--topic", required=True)
    dp.add_argument("--partition", type=int, required=True)
    dp.add_argument("--broker-id", type=int, help="ask this replica (default: the leader)")
    fh = commands["find-hanging"]
    fh.add_argument("--broker-id", type=int, required=True)
    fh.add_argument("--topic")
    fh.add_argument("--partition", type=int)
    fh.add_argument("--max-transaction-timeout", type=int, default=15, metavar="MINUTES",
                    help="transactions open longer than this may hang (default 15)")
    ab = commands["abort"]
    ab.add_argument("--topic", required=True)
    ab.add_argument("--partition", type=int, required=True)
    ab.add_argument("--start-offset", type=int)
    ab.add_argument("--producer-id", type=int)
    ab.add_argument("--producer-epoch", type=int)
    ab.add_argument("--coordinator-epoch", type=int)


def run(args: argparse.Namespace) -> int:
    try:
        conf = client_config(args.bootstrap_server, args.command_config,
                             {"client.id": CLIENT_ID})
        protocol = str(conf.get("security.protocol", "plaintext")).lower()
        if protocol != "plaintext":
            raise ToolError("transactions talks to the brokers over PLAINTEXT only "
                            f"(security.protocol={protocol} is not supported)")
        cluster = Cluster(conf)
        actions = {"list": _list, "describe": _describe,
                   "describe-producers": _describe_producers,
                   "find-hanging": _find_hanging, "abort": _abort}
        return actions[args.action](cluster, args)
    except client_errors() as e:
        print(error_text(e), file=sys.stderr)
        return 1


class Cluster:
    """The brokers (from the bootstrap servers' metadata) and requests to one of them."""

    def __init__(self, conf: dict) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient(conf)
        nodes = self.admin.describe_cluster(request_timeout=TIMEOUT).result(
            timeout=TIMEOUT + 10).nodes
        self.nodes = {n.id: (n.host, n.port) for n in sorted(nodes, key=lambda n: n.id)}

    def request(self, broker: int, api_key: int, version: int, **fields):
        from strom.protocol.client import BrokerConnectionError
        from strom.protocol.messages import make, request_schema

        if broker not in self.nodes:
            raise ToolError(f"Broker {broker} is not in the cluster "
                            f"(brokers: {','.join(map(str, self.nodes))})")
        host, port = self.nodes[broker]
        try:
            return broker_request(host, port, make(request_schema(api_key, version), **fields),
                                  CLIENT_ID, TIMEOUT)
        except BrokerConnectionError as e:
            raise ToolError(str(e)) from None

    def any_broker(self) -> int:
        return next(iter(self.nodes))

    def leader(self, topic: str, partition: int) -> int:
        md = self.admin.list_topics(topic, timeout=TIMEOUT)
        t = md.topics.get(topic)
        if t is None or t.error is not None or partition not in t.partitions:
            raise ToolError(f"Topic partition {topic}-{partition} does not exist")
        return t.partitions[partition].leader

    def coordinator(self, transactional_id: str) -> int:
        r = self.request(self.any_broker(), FIND_COORDINATOR, 4, key_type=1,
                         coordinator_keys=(transactional_id,))
        c = r.coordinators[0]
        if c.error_code != 0:
            raise ToolError(f"Could not find the coordinator of {transactional_id}: "
                            f"{_error(c.error_code)}")
        return c.node_id

    def producers(self, broker: int, topic: str, partition: int) -> list:
        from strom.protocol.messages import make, request_module

        mod = request_module(DESCRIBE_PRODUCERS, 0)
        r = self.request(broker, DESCRIBE_PRODUCERS, 0, topics=(make(
            mod.TopicRequest, name=topic, partition_indexes=(partition,)),))
        p = r.topics[0].partitions[0]
        if p.error_code != 0:
            raise ToolError(f"DescribeProducers of {topic}-{partition} failed: "
                            f"{_error(p.error_code)}")
        return list(p.active_producers)


def _error(code: int) -> str:
    from strom.protocol.errors import ErrorCode

    try:
        return ErrorCode(code).name.upper()
    except ValueError:
        return f"error {code}"


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """As Kafka's tool prints a table: each cell padded to its column's widest, the
    columns separated by a tab."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("\t".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _ms(value) -> int:
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    return int(value)


def _list(cluster: Cluster, args) -> int:
    rows = []
    for broker in cluster.nodes:
        r = cluster.request(broker, LIST_TXNS, 0, state_filters=(), producer_id_filters=())
        if r.error_code != 0:
            raise ToolError(f"ListTransactions on broker {broker} failed: "
                            f"{_error(r.error_code)}")
        rows += [[t.transactional_id, broker, t.producer_id, t.transaction_state]
                 for t in r.transaction_states]
    print_table(["TransactionalId", "Coordinator", "ProducerId", "TransactionState"],
                sorted(rows))
    return 0


def _describe(cluster: Cluster, args) -> int:
    coordinator = cluster.coordinator(args.transactional_id)
    r = cluster.request(coordinator, DESCRIBE_TXNS, 0,
                        transactional_ids=(args.transactional_id,))
    t = r.transaction_states[0]
    if t.error_code != 0:
        raise ToolError(f"Failed to describe transactional id {args.transactional_id}: "
                        f"{_error(t.error_code)}")
    start = _ms(t.transaction_start_time)
    open_ = t.transaction_state in ("Ongoing", "PrepareCommit", "PrepareAbort")
    now = int(time.time() * 1000)
    parts = ",".join(f"{d.topic}-{p}" for d in t.topics for p in d.partitions)
    print_table(["CoordinatorId", "TransactionalId", "ProducerId", "ProducerEpoch",
                 "TransactionState", "TransactionTimeoutMs", "CurrentTransactionStartTimeMs",
                 "TransactionDurationMs", "TopicPartitions"],
                [[coordinator, t.transactional_id, t.producer_id, t.producer_epoch,
                  t.transaction_state, _ms(t.transaction_timeout),
                  start if open_ else "None", now - start if open_ else "None", parts]])
    return 0


def _describe_producers(cluster: Cluster, args) -> int:
    broker = args.broker_id if args.broker_id is not None else \
        cluster.leader(args.topic, args.partition)
    rows = [[p.producer_id, p.producer_epoch,
             p.coordinator_epoch if p.coordinator_epoch >= 0 else "None",
             p.last_sequence, _ms(p.last_timestamp),
             p.current_txn_start_offset if p.current_txn_start_offset >= 0 else "None"]
            for p in cluster.producers(broker, args.topic, args.partition)]
    print_table(["ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence",
                 "LastTimestamp", "CurrentTransactionStartOffset"], rows)
    return 0


def _partitions_on(cluster: Cluster, broker: int, topic: str | None,
                   partition: int | None) -> list[tuple[str, int]]:
    md = cluster.admin.list_topics(topic, timeout=TIMEOUT)
    out = []
    for name, t in sorted(md.topics.items()):
        for p, info in sorted(t.partitions.items()):
            if info.leader == broker and (partition is None or p == partition):
                out.append((name, p))
    return out


def _find_hanging(cluster: Cluster, args) -> int:
    if args.partition is not None and args.topic is None:
        raise ToolError("--partition needs --topic")
    max_ms = args.max_transaction_timeout * 60_000
    now = int(time.time() * 1000)
    candidates = []
    for topic, p in _partitions_on(cluster, args.broker_id, args.topic, args.partition):
        for prod in cluster.producers(args.broker_id, topic, p):
            last = _ms(prod.last_timestamp)
            if prod.current_txn_start_offset >= 0 and now - last > max_ms:
                candidates.append((topic, p, prod, last))
    hanging = []
    for topic, p, prod, last in candidates:
        if not _still_open(cluster, prod.producer_id, topic, p):
            hanging.append([topic, p, prod.producer_id, prod.producer_epoch,
                            prod.coordinator_epoch, prod.current_txn_start_offset, last,
                            (now - last) // 60_000])
    print_table(["Topic", "Partition", "ProducerId", "ProducerEpoch", "CoordinatorEpoch",
                 "StartOffset", "LastTimestamp", "Duration(min)"], hanging)
    return 0


def _still_open(cluster: Cluster, producer_id: int, topic: str, partition: int) -> bool:
    """Whether a coordinator has the producer's transaction open on the partition."""
    for broker in cluster.nodes:
        r = cluster.request(broker, LIST_TXNS, 0, state_filters=(),
                            producer_id_filters=(producer_id,))
        for t in r.transaction_states:
            d = cluster.request(broker, DESCRIBE_TXNS, 0,
                                transactional_ids=(t.transactional_id,))
            for s in d.transaction_states:
                if s.error_code == 0 and s.producer_id == producer_id and \
                        s.transaction_state in ("Ongoing", "PrepareCommit", "PrepareAbort") \
                        and any(x.topic == topic and partition in x.partitions
                                for x in s.topics):
                    return True
    return False


def _abort(cluster: Cluster, args) -> int:
    from strom.protocol.messages import make, request_module

    leader = cluster.leader(args.topic, args.partition)
    if args.start_offset is not None:
        found = [p for p in cluster.producers(leader, args.topic, args.partition)
                 if p.current_txn_start_offset == args.start_offset]
        if not found:
            raise ToolError(f"Could not find any open transactions starting at offset "
                            f"{args.start_offset} on partition {args.topic}-{args.partition}")
        pid, epoch, coord_epoch = found[0].producer_id, found[0].producer_epoch, \
            found[0].coordinator_epoch
    elif None in (args.producer_id, args.producer_epoch, args.coordinator_epoch):
        raise ToolError("abort needs --start-offset, or --producer-id, --producer-epoch and "
                        "--coordinator-epoch")
    else:
        pid, epoch, coord_epoch = args.producer_id, args.producer_epoch, \
            args.coordinator_epoch
    mod = request_module(WRITE_MARKERS, 1)
    r = cluster.request(leader, WRITE_MARKERS, 1, markers=(make(
        mod.WritableTxnMarker, producer_id=pid, producer_epoch=epoch,
        transaction_result=False, coordinator_epoch=max(coord_epoch, 0),
        topics=(make(mod.WritableTxnMarkerTopic, name=args.topic,
                     partition_indexes=(args.partition,)),)),))
    code = r.markers[0].topics[0].partitions[0].error_code
    if code != 0:
        raise ToolError(f"Failed to abort the transaction of producer {pid} on "
                        f"{args.topic}-{args.partition}: {_error(code)}")
    return 0
