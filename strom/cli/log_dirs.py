"""Describe the log directories of brokers (like Kafka's kafka-log-dirs.sh).

Asks each broker (all of the cluster, or those of --broker-list) for its log directories
(DescribeLogDirs) and prints, per broker and log dir, every partition replica it holds with
its size in bytes, its offset lag and whether it is a future replica, as one line of JSON:

  Querying brokers for log directories information
  Received log directory information from brokers 1,2
  {"version":1,"brokers":[{"broker":1,"logDirs":[{"logDir":"/data/a","error":null,
   "partitions":[{"partition":"orders-0","size":4096,"offsetLag":0,"isFuture":false}]}]}]}

(the JSON is one line). --topic-list keeps only the partitions of those topics.

examples:
  strom log-dirs --describe
  strom log-dirs --describe --broker-list 1,2 --topic-list orders,audit
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from strom.cli._common import (
    ToolError,
    add_bootstrap_argument,
    add_command_config_argument,
    broker_request,
    client_config,
    client_errors,
    error_text,
)

TIMEOUT = 30.0  # seconds, for every request
CLIENT_ID = "log-dirs-tool"
REQUEST_VERSION = 4  # the newest DescribeLogDirs Kafka 4 serves
KAFKA_STORAGE_ERROR = 56


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    add_command_config_argument(parser)
    parser.add_argument("--describe", action="store_true",
                        help="describe the log directories of the brokers (required)")
    parser.add_argument("--topic-list", default="", metavar="TOPIC1,TOPIC2",
                        help="only the partitions of these topics (default: every topic)")
    parser.add_argument("--broker-list", default="", metavar="ID1,ID2",
                        help="only these brokers (default: every broker of the cluster)")


def run(args: argparse.Namespace) -> int:
    try:
        if not args.describe:
            raise ToolError("Missing required option(s): --describe")
        topics = _split(args.topic_list)
        brokers = _broker_ids(args.broker_list)
        conf = client_config(args.bootstrap_server, args.command_config,
                             {"client.id": CLIENT_ID})
        return _describe(conf, brokers, topics)
    except client_errors() as e:
        print(error_text(e), file=sys.stderr)
        return 1


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _broker_ids(text: str) -> set[int]:
    out = set()
    for item in _split(text):
        try:
            out.add(int(item))
        except ValueError:
            raise ToolError(f'--broker-list: For input string: "{item}"') from None
    return out


def _ids(ids) -> str:
    return ",".join(str(i) for i in sorted(ids))


def _describe(conf: dict, wanted_brokers: set[int], topics: list[str]) -> int:
    from confluent_kafka.admin import AdminClient

    protocol = str(conf.get("security.protocol", "plaintext")).lower()
    if protocol != "plaintext":
        raise ToolError("log-dirs talks to the brokers over PLAINTEXT only "
                        f"(security.protocol={protocol} is not supported)")
    admin = AdminClient(conf)  # kept alive until the answer is in
    nodes = admin.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT + 10).nodes
    cluster = {n.id: n for n in nodes}
    missing = wanted_brokers - cluster.keys()
    if missing:
        raise ToolError(f"ERROR: The given brokers do not exist from --broker-list: "
                        f"{_ids(missing)}. Current existent brokers: {_ids(cluster)}")
    queried = sorted(wanted_brokers or cluster.keys())
    print("Querying brokers for log directories information", flush=True)
    described = [(b, _describe_broker(cluster[b].host, cluster[b].port)) for b in queried]
    print(f"Received log directory information from brokers {_ids(queried)}")
    print(format_json(described, set(topics)))
    return 0


def _describe_broker(host: str, port: int):
    """One broker's DescribeLogDirs results (every partition of every log dir)."""
    from strom.protocol.client import BrokerConnectionError
    from strom.protocol.messages import make, request_schema

    try:
        response = broker_request(host, port, make(request_schema(35, REQUEST_VERSION),
                                                   topics=None), CLIENT_ID, TIMEOUT)
    except BrokerConnectionError as e:
        raise ToolError(str(e)) from None
    if response.error_code != 0:
        raise ToolError(exception_name(response.error_code))
    return response.results


def exception_name(code: int) -> str:
    """The Java exception class Kafka's admin client raises for an error code, as
    kafka-log-dirs prints it (e.g. org.apache.kafka.common.errors.KafkaStorageException)."""
    from strom.protocol.errors import ErrorCode

    try:
        name = ErrorCode(code).name
    except ValueError:
        return "org.apache.kafka.common.errors.UnknownServerException"
    camel = "".join(part.capitalize() for part in name.split("_"))
    camel = re.sub(r"(Error|Failed)$", "", camel)
    return f"org.apache.kafka.common.errors.{camel}Exception"


def format_json(described: list[tuple[int, tuple]], topics: set[str]) -> str:
    """kafka-log-dirs' JSON, on one line: brokers, their log dirs, their partitions (those
    of `topics` only, when given)."""
    brokers = []
    for broker_id, results in described:
        dirs = []
        for r in results:
            partitions = [
                {"partition": f"{t.name}-{p.partition_index}", "size": p.partition_size,
                 "offsetLag": p.offset_lag, "isFuture": p.is_future_key}
                for t in sorted(r.topics, key=lambda t: t.name)
                if not topics or t.name in topics
                for p in sorted(t.partitions, key=lambda p: p.partition_index)]
            dirs.append({"logDir": r.log_dir,
                         "error": exception_name(r.error_code) if r.error_code else None,
                         "partitions": partitions})
        brokers.append({"broker": broker_id, "logDirs": dirs})
    return json.dumps({"version": 1, "brokers": brokers}, separators=(",", ":"))
