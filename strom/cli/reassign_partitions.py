"""Move partition replicas between brokers (like Kafka's kafka-reassign-partitions.sh).

Exactly one action is required:
  --generate  propose an assignment of the topics in --topics-to-move-json-file over the
              brokers of --broker-list (nothing is changed)
  --execute   start the reassignment in --reassignment-json-file (prints the current
              assignment first: save it to roll back)
  --verify    tell, per partition of --reassignment-json-file, whether its move completed
  --cancel    cancel the ongoing moves of the partitions in --reassignment-json-file
  --list      list the reassignments in progress

The move runs in the background on the brokers: new replicas copy the log from the leader,
and once all of them are in sync the old ones are removed (their logs deleted).

examples:
  echo '{"version":1,"topics":[{"topic":"orders"}]}' > topics.json
  strom reassign-partitions --generate --topics-to-move-json-file topics.json --broker-list 2,3,4
  strom reassign-partitions --execute --reassignment-json-file plan.json
  strom reassign-partitions --verify --reassignment-json-file plan.json
  strom reassign-partitions --cancel --reassignment-json-file plan.json
  strom reassign-partitions --list

plan.json: {"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[2,3],"log_dirs":["any","any"]}]}
("log_dirs" may be left out; only "any" is supported.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from strom.cli import _common as common
from strom.cli._common import ToolError

TIMEOUT = 30.0  # seconds, for every request
ACTIONS = ("generate", "execute", "verify", "cancel", "list")
ANY_LOG_DIR = "any"
NOT_CONTROLLER = 41

CANNOT_EXECUTE_BECAUSE_OF_EXISTING = (
    "Cannot execute because there is an existing partition assignment.  Use --additional to "
    "override this and create a new partition assignment in addition to the existing one. "
    "The --additional flag can also be used to change the throttle by resubmitting the "
    "current reassignment.")

# option -> the actions it may be used with (Kafka's permitted arguments)
_OPTION_ACTIONS = {
    "topics_to_move_json_file": ("generate",),
    "broker_list": ("generate",),
    "disable_rack_aware": ("generate",),
    "reassignment_json_file": ("execute", "verify", "cancel"),
    "additional": ("execute",),
    "preserve_throttles": ("verify", "cancel"),
    "wait": ("execute", "verify"),
    "wait_timeout_ms": ("execute", "verify"),
}
_REQUIRED = {
    "generate": ("topics_to_move_json_file", "broker_list"),
    "execute": ("reassignment_json_file",),
    "verify": ("reassignment_json_file",),
    "cancel": ("reassignment_json_file",),
    "list": (),
}

TopicPartition = tuple[str, int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    common.add_command_config_argument(parser)
    common.add_actions(parser, {
        "--generate": "propose a reassignment of --topics-to-move-json-file's topics over "
                      "--broker-list (changes nothing)",
        "--execute": "start the reassignment in --reassignment-json-file",
        "--verify": "show whether the reassignment in --reassignment-json-file completed",
        "--cancel": "cancel the ongoing reassignment of the partitions in "
                    "--reassignment-json-file",
        "--list": "list the partition reassignments in progress",
    })
    parser.add_argument("--topics-to-move-json-file", metavar="FILE",
                        help='for --generate: {"version":1,"topics":[{"topic":"foo"},...]}')
    parser.add_argument("--broker-list", metavar="ID,ID,...",
                        help="for --generate: the brokers to place the replicas on, e.g. 1,2,3")
    parser.add_argument("--disable-rack-aware", action="store_true",
                        help="for --generate: ignore broker.rack")
    parser.add_argument("--reassignment-json-file", metavar="FILE",
                        help='for --execute, --verify, --cancel: {"version":1,"partitions":'
                             '[{"topic":"foo","partition":0,"replicas":[1,2,3]},...]}')
    common.add_flags(parser, {
        "--additional": "for --execute: start it even though other reassignments are in progress",
        "--preserve-throttles": "for --verify and --cancel: accepted for compatibility (strom "
                                "sets no replication throttles)",
        "--wait": "for --execute and --verify: wait until the moves completed, showing "
                  "their progress (a strom addition)",
    })
    parser.add_argument("--wait-timeout-ms", type=int, default=0, metavar="MS",
                        help="with --wait: give up after this long (0, the default: no limit)")


def run(args: argparse.Namespace) -> int:
    action = common.chosen_action(args, ACTIONS)
    try:
        _check_args(args, action)
        conf = common.client_config(args.bootstrap_server, args.command_config)
        return _ACTION_FUNCS[action](_Cluster(conf), args)
    except _Terse as e:
        print(str(e), file=sys.stderr)
        return 1
    except common.client_errors() as e:
        print(f"Error: {common.error_text(e)}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"Error: timed out: {e}" if str(e) else "Error: timed out", file=sys.stderr)
        return 1


class _Terse(ToolError):
    """A failure whose text is printed as it is (Kafka's TerseException)."""


def _check_args(args: argparse.Namespace, action: str) -> None:
    for option in _REQUIRED[action]:
        if getattr(args, option) is None:
            raise ToolError(f"Missing required argument \"{common.option_name(option)}\" "
                            f"for --{action}")
    for option, actions in _OPTION_ACTIONS.items():
        if getattr(args, option) not in (None, False) and action not in actions:
            raise ToolError(f"Option \"{common.option_name(option)}\" can't be used with action "
                            f"\"--{action}\"")


# -- JSON files ----------------------------------------------------------------------------------


def _load_json(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ToolError(f"The {what} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ToolError(f"The {what} must be a JSON object")
    version = data.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise ToolError(f"Not supported version field value {json.dumps(version)}")
    return data


def _json_array(text: str, what: str, field: str) -> list:
    """The array `field` of the version-1 JSON object in `text` (empty when absent)."""
    entries = _load_json(text, what).get(field, [])
    if not isinstance(entries, list):
        raise ToolError(f'"{field}" in the {what} must be an array')
    return entries


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_topics_json(text: str) -> list[str]:
    """--topics-to-move-json-file: {"version":1,"topics":[{"topic":"foo"}]}."""
    entries = _json_array(text, "topics-to-move JSON", "topics")
    topics = []
    for i, entry in enumerate(entries):
        topic = entry.get("topic") if isinstance(entry, dict) else None
        if not isinstance(topic, str):
            raise ToolError(f'Entry {i} of "topics" needs a string "topic": '
                            f"{json.dumps(entry)}")
        topics.append(topic)
    if not topics:
        raise ToolError("The topics-to-move JSON lists no topics")
    dupes = sorted({t for t in topics if topics.count(t) > 1})
    if dupes:
        raise ToolError("List of topics to reassign contains duplicate entries: "
                        + ", ".join(dupes))
    return topics


def parse_reassignment_json(text: str) -> list[tuple[TopicPartition, list[int]]]:
    """--reassignment-json-file, in file order: [((topic, partition), replicas)]. Entries
    may repeat (checked by --execute)."""
    entries = _json_array(text, "reassignment JSON", "partitions")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ToolError(f'Entry {i} of "partitions" must be an object: {json.dumps(entry)}')
        topic, partition, replicas = (entry.get("topic"), entry.get("partition"),
                                      entry.get("replicas"))
        if not isinstance(topic, str) or not _is_int(partition) or \
                not isinstance(replicas, list) or not all(map(_is_int, replicas)):
            raise ToolError(f'Entry {i} of "partitions" needs a string "topic", an integer '
                            f'"partition" and "replicas", a list of broker ids: '
                            f"{json.dumps(entry)}")
        name = f"{topic}-{partition}"
        log_dirs = entry.get("log_dirs", [ANY_LOG_DIR] * len(replicas))
        if not isinstance(log_dirs, list) or not all(isinstance(d, str) for d in log_dirs):
            raise ToolError(f'"log_dirs" of partition {name} must be a list of strings')
        if len(log_dirs) != len(replicas):
            raise ToolError(f"Size of replicas list {_java_list(replicas)} is different from "
                            f"size of log dirs list {_java_list(log_dirs)} for partition "
                            f"{name}")
        if any(d != ANY_LOG_DIR for d in log_dirs):
            raise ToolError(f"Moving replicas between log directories is not supported: "
                            f'the log_dirs of partition {name} must all be "{ANY_LOG_DIR}"')
        out.append(((topic, partition), replicas))
    return out


def _java_list(items) -> str:
    return "[" + ", ".join(map(str, items)) + "]"


def _tp(tp: TopicPartition) -> str:
    return f"{tp[0]}-{tp[1]}"


def format_reassignment_json(parts: dict[TopicPartition, list[int]]) -> str:
    """Kafka's reassignment JSON, partitions sorted by topic then partition."""
    return json.dumps({"version": 1, "partitions": [
        {"topic": t, "partition": p, "replicas": list(parts[(t, p)]),
         "log_dirs": [ANY_LOG_DIR] * len(parts[(t, p)])}
        for t, p in sorted(parts)]}, separators=(",", ":"))


def parse_broker_list(text: str) -> list[int]:
    try:
        brokers = [int(b.strip()) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ToolError(f"--broker-list expects comma-separated broker ids, got {text!r}") \
            from None
    if not brokers:
        raise ToolError("--broker-list names no broker")
    dupes = sorted({b for b in brokers if brokers.count(b) > 1})
    if dupes:
        raise ToolError("Broker list contains duplicate entries: " + ", ".join(map(str, dupes)))
    return brokers


# -- the cluster -----------------------------------------------------------------------------------


class _Cluster:
    """Metadata through confluent-kafka; the KIP-455 requests, which librdkafka does not
    offer, sent to the controller with strom's BrokerConnection (PLAINTEXT only)."""

    def __init__(self, conf: dict) -> None:
        from confluent_kafka.admin import AdminClient

        self.conf = conf
        self.admin = AdminClient(conf)

    def metadata(self):
        return self.admin.list_topics(timeout=TIMEOUT)

    def nodes(self):
        return self.admin.describe_cluster(request_timeout=TIMEOUT).result(
            timeout=TIMEOUT + 10).nodes

    def replicas(self, topics: set[str]) -> dict[str, dict[int, list[int]] | None]:
        """Each topic's replica assignment {partition: replicas}; None if it does not
        exist."""
        md = self.metadata()
        out: dict[str, dict[int, list[int]] | None] = {}
        for name in topics:
            t = md.topics.get(name)
            if t is None or t.error is not None:
                out[name] = None
            else:
                out[name] = {p: list(info.replicas) for p, info in t.partitions.items()}
        return out

    def controller_request(self, request):
        """Send a request to the controller; once more after re-reading the metadata when
        the broker answers NOT_CONTROLLER (the office moved)."""
        protocol = str(self.conf.get("security.protocol", "plaintext")).lower()
        if protocol != "plaintext":
            raise ToolError("reassign-partitions talks to the controller over PLAINTEXT only "
                            f"(security.protocol={protocol} is not supported)")
        response = None
        for attempt in range(2):
            md = self.metadata()
            broker = md.brokers.get(md.controller_id)
            if broker is None:
                if attempt == 0:
                    time.sleep(1.0)
                    continue
                raise ToolError("No controller is available")
            response = _request(broker.host, broker.port, request)
            if response.error_code != NOT_CONTROLLER:
                return response
            time.sleep(0.5)
        if response is not None:
            return response
        raise ToolError("No controller is available")

    def list_reassignments(self, partitions: list[TopicPartition] | None = None
                           ) -> dict[TopicPartition, tuple[list[int], list[int], list[int]]]:
        """Ongoing reassignments: {tp: (replicas, adding, removing)}."""
        from strom.protocol.messages import make, request_module, request_schema

        mod = request_module(46, 0)
        topics = None
        if partitions is not None:
            by_topic: dict[str, list[int]] = {}
            for t, p in partitions:
                by_topic.setdefault(t, []).append(p)
            topics = tuple(make(mod.ListPartitionReassignmentsTopics, name=t,
                                partition_indexes=tuple(ps)) for t, ps in by_topic.items())
        response = self.controller_request(make(
            request_schema(46, 0), timeout=datetime.timedelta(seconds=TIMEOUT), topics=topics))
        _raise_top_level(response)
        return {(t.name, p.partition_index): (list(p.replicas), list(p.adding_replicas),
                                              list(p.removing_replicas))
                for t in response.topics for p in t.partitions}

    def alter_reassignments(self, changes: dict[TopicPartition, list[int] | None]
                            ) -> dict[TopicPartition, str]:
        """Start (replicas) or cancel (None) reassignments; {tp: error text} for the
        partitions that failed."""
        from strom.protocol.messages import make, request_module, request_schema

        mod = request_module(45, 0)
        by_topic: dict[str, list] = {}
        for (t, p), replicas in changes.items():
            by_topic.setdefault(t, []).append(make(
                mod.ReassignablePartition, partition_index=p,
                replicas=None if replicas is None else tuple(replicas)))
        response = self.controller_request(make(
            request_schema(45, 0), timeout=datetime.timedelta(seconds=TIMEOUT),
            topics=tuple(make(mod.ReassignableTopic, name=t, partitions=tuple(ps))
                         for t, ps in by_topic.items())))
        _raise_top_level(response)
        errors: dict[TopicPartition, str] = {}
        answered = set()
        for t in response.responses:
            for p in t.partitions:
                answered.add((t.name, p.partition_index))
                if p.error_code != 0:
                    errors[(t.name, p.partition_index)] = _error_text(p.error_code,
                                                                      p.error_message)
        for tp in changes:
            if tp not in answered:
                errors[tp] = "the controller gave no result for this partition"
        return errors


def _request(host: str, port: int, request):
    from strom.protocol.client import BrokerConnectionError

    try:
        return common.broker_request(host, port, request, "reassign-partitions-tool", TIMEOUT)
    except BrokerConnectionError as e:
        raise ToolError(str(e)) from None


def _error_text(code: int, message: str | None) -> str:
    """`NAME: message` with Kafka's name for the error code."""
    from strom.protocol.errors import ErrorCode

    try:
        name = ErrorCode(code).name.upper()
    except ValueError:
        name = f"error {code}"
    return f"{name}: {message}" if message else name


def _raise_top_level(response) -> None:
    if response.error_code != 0:
        raise ToolError(_error_text(response.error_code, response.error_message))


# -- actions -----------------------------------------------------------------------------------


def _generate(cluster: _Cluster, args) -> int:
    from strom.cluster.controller import assign_replicas, assign_replicas_rack_aware
    from strom.protocol.errors import KafkaError

    brokers = parse_broker_list(args.broker_list)
    topics = parse_topics_json(common.read_text(args.topics_to_move_json_file))
    current: dict[TopicPartition, list[int]] = {}
    for name, parts in sorted(cluster.replicas(set(topics)).items()):
        if parts is None:
            raise ToolError(f"Topic {name} not found.")
        current.update({(name, p): r for p, r in parts.items()})
    # as Kafka: ids that are not brokers of the cluster are left out
    wanted = set(brokers)
    nodes = [n for n in cluster.nodes() if n.id in wanted]
    racks = {n.id: n.rack for n in nodes}
    rackless = [b for b, r in racks.items() if not r]
    if not args.disable_rack_aware and rackless and len(rackless) != len(racks):
        raise ToolError("Not all brokers have rack information. Add --disable-rack-aware in "
                        "command line to make replica assignment without rack information.")
    rack_aware = not args.disable_rack_aware and racks and not rackless
    proposed: dict[TopicPartition, list[int]] = {}
    for name in sorted(topics):
        parts = {p: r for (t, p), r in current.items() if t == name}
        if not parts:
            continue
        rf = len(parts[min(parts)])
        try:
            if rack_aware:
                placed = assign_replicas_rack_aware(racks, len(parts), rf)  # type: ignore[arg-type]
            else:
                placed = assign_replicas(sorted(racks), len(parts), rf)
        except KafkaError as e:
            raise ToolError(e.message or str(e)) from None
        proposed.update({(name, p): list(r) for p, r in placed.items()})
    print("Current partition replica assignment")
    print(format_reassignment_json(current))
    print()
    print("Proposed partition reassignment configuration")
    print(format_reassignment_json(proposed))
    return 0


def _execute(cluster: _Cluster, args) -> int:
    entries = parse_reassignment_json(common.read_text(args.reassignment_json_file))
    if not entries:
        raise ToolError("Partition reassignment list cannot be empty")
    if any(not replicas for _, replicas in entries):
        raise ToolError("Partition replica list cannot be empty")
    tps = [tp for tp, _ in entries]
    dupes = sorted({tp for tp in tps if tps.count(tp) > 1})
    if dupes:
        raise ToolError("Partition reassignment contains duplicate topic partitions: "
                        + ",".join(map(_tp, dupes)))
    dupe_replicas = [
        f"{_tp(tp)} contains multiple entries for "
        + ",".join(str(b) for b in sorted({b for b in replicas if replicas.count(b) > 1}))
        for tp, replicas in entries if len(set(replicas)) != len(replicas)]
    if dupe_replicas:
        raise ToolError("Partition replica lists may not contain duplicate entries: "
                        + ". ".join(dupe_replicas))
    proposed = dict(entries)
    if not args.additional and cluster.list_reassignments():
        raise _Terse(CANNOT_EXECUTE_BECAUSE_OF_EXISTING)
    assignments = cluster.replicas({t for t, _ in proposed})
    current: dict[TopicPartition, list[int]] = {}
    missing = []
    for tp in sorted(proposed):
        parts = assignments[tp[0]]
        if parts is None or tp[1] not in parts:
            missing.append(tp)
        else:
            current[tp] = parts[tp[1]]
    if missing:
        raise ToolError("Unable to find partition: " + ", ".join(map(_tp, missing)))
    print("Current partition replica assignment")
    print()
    print(format_reassignment_json(current))
    print()
    print("Save this to use as the --reassignment-json-file option during rollback")
    errors = cluster.alter_reassignments(proposed)
    if errors:
        raise _Terse("Error reassigning partition(s):\n" + "\n".join(
            f"{_tp(tp)}: {errors[tp]}" for tp in sorted(errors)))
    print(f"Successfully started partition reassignment{'' if len(proposed) == 1 else 's'} "
          f"for {','.join(_tp(tp) for tp in sorted(proposed))}")
    if args.wait:
        _wait(cluster, set(proposed), args.wait_timeout_ms)
        return _verify(cluster, args)
    return 0


WAIT_POLL_S = 0.5
METADATA_GRACE_S = 5.0  # --wait: how long a finished move may take to show in Metadata


def _wait(cluster: _Cluster, partitions: set[TopicPartition], timeout_ms: int) -> None:
    """Poll ListPartitionReassignments until none of `partitions` is still moving; the
    count of finished moves is a progress bar on a terminal, else a line every 5 s on
    stderr. TimeoutError after `timeout_ms` (> 0); the moves go on regardless."""
    from strom.cli.progress import Progress

    deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
    with Progress("Reassigning", total=len(partitions), unit="partitions",
                  plain_every=5.0) as progress:
        while True:
            moving = partitions & set(cluster.list_reassignments(sorted(partitions)))
            progress.advance(len(partitions) - len(moving) - progress.done)
            if not moving:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{len(moving)} of {len(partitions)} partition moves "
                                   f"still in progress after {timeout_ms} ms")
            time.sleep(WAIT_POLL_S)


def _verify(cluster: _Cluster, args) -> int:
    targets = dict(parse_reassignment_json(common.read_text(args.reassignment_json_file)))
    if args.wait and args.verify:
        _wait(cluster, set(targets), args.wait_timeout_ms)
    ongoing = cluster.list_reassignments()
    finished = {tp: want for tp, want in targets.items() if tp not in ongoing}
    assignments = cluster.replicas({tp[0] for tp in finished})
    if args.wait:
        # the controller drops a finished move before every broker's metadata shows its
        # replica set: give the answering broker a few seconds to catch up
        deadline = time.monotonic() + METADATA_GRACE_S
        while time.monotonic() < deadline and any(
                (assignments.get(tp[0]) or {}).get(tp[1], []) != want
                for tp, want in finished.items()):
            time.sleep(WAIT_POLL_S)
            assignments = cluster.replicas({tp[0] for tp in finished})
    print("Status of partition reassignment:")
    for tp in sorted(targets):
        if tp in ongoing:
            print(f"Reassignment of partition {_tp(tp)} is still in progress.")
            continue
        parts = assignments.get(tp[0]) or {}
        current = parts.get(tp[1], [])
        if current == targets[tp]:
            print(f"Reassignment of partition {_tp(tp)} is completed.")
        else:
            print(f"There is no active reassignment of partition {_tp(tp)}, but replica set "
                  f"is {','.join(map(str, current))} rather than "
                  f"{','.join(map(str, targets[tp]))}.")
    return 0


def _cancel(cluster: _Cluster, args) -> int:
    plan = parse_reassignment_json(common.read_text(args.reassignment_json_file))
    targets = [tp for tp, _ in plan]
    active = sorted(tp for tp, (_, adding, removing)
                    in cluster.list_reassignments(targets).items() if adding or removing)
    if not active:
        print("None of the specified partition reassignments are active.")
        return 0
    errors = cluster.alter_reassignments(dict.fromkeys(active))
    if errors:
        raise _Terse(f"Error cancelling partition reassignment{'' if len(errors) == 1 else 's'}"
                     " for:\n" + "\n".join(f"{_tp(tp)}: {errors[tp]}" for tp in sorted(errors)))
    print(f"Successfully cancelled partition reassignment{'' if len(active) == 1 else 's'} "
          f"for: {','.join(map(_tp, active))}")
    return 0


def _list(cluster: _Cluster, args) -> int:
    ongoing = cluster.list_reassignments()
    if not ongoing:
        print("No partition reassignments found.")
        return 0
    print("Current partition reassignments:")
    for tp in sorted(ongoing):
        replicas, adding, removing = ongoing[tp]
        line = f"{_tp(tp)}: replicas: {','.join(map(str, replicas))}."
        if adding:
            line += f" adding: {','.join(map(str, adding))}."
        if removing:
            line += f" removing: {','.join(map(str, removing))}."
        print(line)
    return 0


_ACTION_FUNCS = {"generate": _generate, "execute": _execute, "verify": _verify,
                 "cancel": _cancel, "list": _list}
