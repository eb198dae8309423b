"""Describe and alter topic and broker configs, broker log levels, users' SCRAM credentials
and client quotas (like Kafka's kafka-configs.sh).

--describe prints the configs set on an entity (a topic's overrides, a broker's dynamic
configs, the cluster-wide broker default, a broker's loggers), or every config with --all;
--alter adds (--add-config) and removes (--delete-config) them through
IncrementalAlterConfigs.

examples:
  strom configs --describe --entity-type topics --entity-name orders
  strom configs --describe --all --entity-type brokers --entity-name 1
  strom configs --alter --entity-type topics --entity-name orders \\
      --add-config retention.ms=3600000,cleanup.policy=[compact,delete]
  strom configs --alter --entity-type brokers --entity-default --add-config log.retention.ms=86400000
  strom configs --alter --entity-type brokers --entity-name 1 --delete-config log.retention.ms
  strom configs --alter --entity-type broker-loggers --entity-name 1 \\
      --add-config strom.replication=DEBUG
  strom configs --alter --entity-type users --entity-name alice \\
      --add-config 'SCRAM-SHA-256=[iterations=8192,password=alice-secret]'
  strom configs --alter --entity-type users --entity-name alice \\
      --add-config producer_byte_rate=1048576,consumer_byte_rate=2097152
  strom configs --alter --entity-type clients --entity-default --add-config request_percentage=200
  strom configs --alter --user alice --client app --add-config producer_byte_rate=10240
  strom configs --describe --entity-type users
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

from strom.cli import scram_configs
from strom.cli._common import (
    ToolError,
    add_actions,
    add_bootstrap_argument,
    add_command_config_argument,
    add_flags,
    broker_request,
    chosen_action,
    client_config,
    client_errors,
    error_text,
)

TIMEOUT = 30.0  # seconds, for every admin request
ACTIONS = ("describe", "alter")
ENTITY_TYPES = ("topics", "brokers", "broker-loggers", "users", "clients")
QUOTA_ENTITY_TYPES = {"users": "user", "clients": "client-id"}
RESOURCE_TYPES = {"topics": 2, "brokers": 4, "broker-loggers": 8}
SOURCE_NAMES = {0: "UNKNOWN", 1: "DYNAMIC_TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG",
                3: "DYNAMIC_DEFAULT_BROKER_CONFIG", 4: "STATIC_BROKER_CONFIG",
                5: "DEFAULT_CONFIG", 6: "DYNAMIC_BROKER_LOGGER_CONFIG"}
# a separator (',' or '=') counts only outside [...]: as kafka-configs' pattern
_OUTSIDE_BRACKETS = r"(?=[^\]]*(?:\[|$))"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    add_command_config_argument(parser)
    add_actions(parser, {
        "--describe": "list the configs of the entity (all entities of the type when no "
                      "name is given)",
        "--alter": "add (--add-config) and delete (--delete-config) configs of the entity",
    })
    parser.add_argument("--entity-type", choices=ENTITY_TYPES,
                        help="topics, brokers, broker-loggers (a broker's loggers and "
                             "their levels: FATAL, ERROR, WARN, INFO, DEBUG, TRACE), users "
                             "(SCRAM credentials: SCRAM-SHA-256=[iterations=N,password=P], "
                             "and client quotas) or clients (client quotas: "
                             "producer_byte_rate, consumer_byte_rate, request_percentage, "
                             "controller_mutation_rate)")
    parser.add_argument("--entity-name", help="topic name, broker id, user or client id")
    parser.add_argument("--topic", help="same as --entity-type topics --entity-name TOPIC")
    parser.add_argument("--broker", help="same as --entity-type brokers --entity-name ID")
    parser.add_argument("--user", help="same as --entity-type users --entity-name USER; "
                                       "with --client, the quotas of that user's client")
    parser.add_argument("--client", help="same as --entity-type clients --entity-name ID")
    add_flags(parser, {
        "--entity-default": "the cluster-wide default of brokers, users or clients",
        "--broker-defaults": "same as --entity-type brokers --entity-default",
        "--all": "with --describe: every config, with its value in effect",
    })
    parser.add_argument("--add-config", metavar="K=V,K2=[A,B]",
                        help="configs to set: comma-separated key=value pairs; a list value "
                             "in square brackets")
    parser.add_argument("--delete-config", action="append", default=[], metavar="K[,K2]",
                        help="configs to remove (comma-separated, repeatable)")


def parse_add_config(text: str) -> dict[str, str]:
    """kafka-configs' --add-config: 'a=1,b=[x,y]' -> {'a': '1', 'b': 'x,y'}."""
    out: dict[str, str] = {}
    for item in re.split("," + _OUTSIDE_BRACKETS, text):
        pair = re.split(r"\s*=\s*" + _OUTSIDE_BRACKETS, item)
        if len(pair) != 2 or not pair[0].strip():
            raise ToolError('Invalid entity config: all configs to be added must be in the '
                            'format "key=val".')
        out[pair[0].strip()] = re.sub(r"[\[\]]", "", pair[1]).strip()
    return out


def _entity(args: argparse.Namespace) -> tuple[str, str | None]:
    """(entity type, name); name "" is the broker default, None all entities."""
    etype, name = args.entity_type, args.entity_name
    if args.topic is not None:
        etype, name = "topics", args.topic
    elif args.broker is not None:
        etype, name = "brokers", args.broker
    elif args.broker_defaults:
        etype, name = "brokers", ""
    if etype is None:
        raise ToolError("--entity-type must be specified")
    if args.entity_default:
        if etype != "brokers":
            raise ToolError("--entity-default is only valid for --entity-type brokers")
        if name is not None:
            raise ToolError("--entity-name and --entity-default cannot both be given")
        name = ""
    if etype == "broker-loggers" and name == "":
        raise ToolError("--entity-default is only valid for --entity-type brokers")
    if etype in ("brokers", "broker-loggers") and name:
        try:
            int(name)
        except ValueError:
            raise ToolError(f"The entity name for brokers must be a valid integer broker "
                            f"id, but it is: {name}") from None
    return etype, name


def _resource(etype: str, name: str):
    from confluent_kafka.admin import ConfigResource, ResourceType

    kind = ResourceType.TOPIC if etype == "topics" else ResourceType.BROKER
    return ConfigResource(kind, name)


@dataclass
class _Entry:
    """A config entry read without confluent-kafka (its attributes as ConfigEntry's)."""

    name: str
    value: str | None
    is_sensitive: bool
    source: int
    synonyms: list = field(default_factory=list)


def _first_broker(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


def _check(code: int, message: str | None) -> None:
    if code:
        from strom.protocol.errors import ErrorCode

        raise ToolError(message or ErrorCode(code).name)


def _send(host: str, port: int, request):
    """`request` sent to one broker; its response."""
    from strom.protocol.client import BrokerConnectionError

    try:
        return broker_request(host, port, request, "strom-configs", TIMEOUT)
    except BrokerConnectionError as e:
        raise ToolError(f"request to {host}:{port} failed: {e}") from None


def _describe_raw(host: str, port: int, resource_type: int, name: str
                  ) -> dict[str, _Entry]:
    """DescribeConfigs (with synonyms) sent to one broker. Not through confluent-kafka:
    its ConfigResource refuses the broker default's name "", and its synonyms are a dict
    by name, which loses synonyms of the same name from different sources."""
    from strom.protocol.messages import make, request_module, request_schema

    mod = request_module(32, 1)
    request = make(request_schema(32, 1), include_synonyms=True, resources=(
        make(mod.DescribeConfigsResource, resource_type=resource_type, resource_name=name,
             configuration_keys=None),))
    result = _send(host, port, request).results[0]
    _check(result.error_code, result.error_message)
    return {c.name: _Entry(c.name, c.value, c.is_sensitive, int(c.config_source), [
        _Entry(s.name, s.value, c.is_sensitive, int(s.source)) for s in c.synonyms])
        for c in result.configs}


def _alter_raw(host: str, port: int, resource_type: int, name: str, added: dict[str, str],
               deleted: list[str]) -> None:
    """IncrementalAlterConfigs sent to one broker (the broker default, a broker's loggers:
    resources confluent-kafka's ConfigResource does not take)."""
    from strom.protocol.messages import make, request_module, request_schema

    mod = request_module(44, 0)
    configs = tuple(make(mod.AlterableConfig, name=k, config_operation=0, value=v)
                    for k, v in added.items())
    configs += tuple(make(mod.AlterableConfig, name=k, config_operation=1, value=None)
                     for k in deleted)
    request = make(request_schema(44, 0), validate_only=False, resources=(
        make(mod.AlterConfigsResource, resource_type=resource_type, resource_name=name,
             configs=configs),))
    result = _send(host, port, request).responses[0]
    _check(result.error_code, result.error_message)


def _address(admin, bootstrap: str, etype: str, name: str) -> tuple[str, int]:
    """Where to send a request on the entity: a broker (or its loggers) only answers for
    itself; a topic or the broker default: any broker."""
    if etype != "topics" and name:
        broker = admin.list_topics(timeout=TIMEOUT).brokers.get(int(name))
        if broker is None:
            raise ToolError(f"Broker {name} is not in the cluster")
        return broker.host, broker.port
    return _first_broker(bootstrap)


def _describe_one(admin, bootstrap: str, etype: str, name: str, every: bool) -> list:
    """The entity's config entries, sorted by name: all of them with `every`, else only
    those set on it (Kafka's source filter)."""
    host, port = _address(admin, bootstrap, etype, name)
    entries = _describe_raw(host, port, RESOURCE_TYPES[etype], name)
    wanted = None if every or etype == "broker-loggers" else \
        (1 if etype == "topics" else 3 if name == "" else 2)
    return sorted((e for e in entries.values() if wanted is None or _source(e) == wanted),
                  key=lambda e: e.name)


def _source(entry) -> int:
    return entry.source


def _text(value: str | None, sensitive: bool) -> str:
    return "null" if sensitive or value is None else value


def entry_line(entry) -> str:
    """As kafka-configs: `  key=value sensitive=false synonyms={SOURCE:key=value, ...}`."""
    synonyms = ", ".join(
        f"{SOURCE_NAMES.get(s.source, 'UNKNOWN')}:{s.name}={_text(s.value, entry.is_sensitive)}"
        for s in entry.synonyms)
    return f"  {entry.name}={_text(entry.value, entry.is_sensitive)} " \
           f"sensitive={str(entry.is_sensitive).lower()} synonyms={{{synonyms}}}"


def describe(admin, args: argparse.Namespace) -> int:
    etype, name = _entity(args)
    if etype == "users":
        return scram_configs.describe(admin, name)
    if name is None:
        if etype == "topics":
            names = sorted(admin.list_topics(timeout=TIMEOUT).topics)
        else:
            brokers = admin.list_topics(timeout=TIMEOUT).brokers
            names = [str(b) for b in sorted(brokers)] + ([""] if etype == "brokers" else [])
    else:
        names = [name]
    for entity in names:
        if entity == "":
            print(f"Default configs for {etype} in the cluster are:")
        else:
            print(f"{'All' if args.all else 'Dynamic'} configs for {etype[:-1]} {entity} are:")
        for entry in _describe_one(admin, args.bootstrap_server, etype, entity, args.all):
            print(entry_line(entry))
    return 0


def alter(admin, args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    etype, name = _entity(args)
    if name is None:
        raise ToolError("an entity name (--entity-name, or --entity-default for brokers) "
                        "is required with --alter")
    added = parse_add_config(args.add_config) if args.add_config else {}
    deleted = [k.strip() for item in args.delete_config for k in item.split(",") if k.strip()]
    if not added and not deleted:
        raise ToolError("--alter needs --add-config and/or --delete-config")
    if etype == "users":
        return scram_configs.alter(admin, name, added, deleted)
    current = {e.name for e in _describe_one(admin, args.bootstrap_server, etype, name, False)}
    if etype == "broker-loggers":
        invalid = [k for k in [*deleted, *added] if k not in current]
        if invalid:
            raise ToolError(f"Invalid broker logger(s): {','.join(invalid)}")
    else:
        invalid = [k for k in deleted if k not in current]
        if invalid:
            raise ToolError(f"Invalid config(s): {','.join(invalid)}")
    if name == "" or etype == "broker-loggers":
        host, port = _address(admin, args.bootstrap_server, etype, name)
        _alter_raw(host, port, RESOURCE_TYPES[etype], name, added, deleted)
        print(f"Completed updating default config for {etype} in the cluster." if name == ""
              else f"Completed updating config for {etype[:-1]} {name}.")
        return 0
    ops = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
           for k, v in added.items()]
    ops += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
            for k in deleted]
    res = ConfigResource(_resource(etype, name).restype, name, incremental_configs=ops)
    admin.incremental_alter_configs([res], request_timeout=TIMEOUT)[res].result(
        timeout=TIMEOUT)
    print(f"Completed updating config for {etype[:-1]} {name}.")
    return 0


def _quota_entity(args: argparse.Namespace) -> list[tuple[str, str | None]] | None:
    """The client-quota entity named on the command line: [(entity type, name)], a None
    name for the default entity; [(type, "")] for every entity of the type; None when the
    command is not about quotas."""
    if args.user is not None or args.client is not None:
        out: list[tuple[str, str | None]] = []
        if args.user is not None:
            out.append(("user", args.user))
        if args.client is not None:
            out.append(("client-id", args.client))
        return out
    if args.entity_type not in QUOTA_ENTITY_TYPES:
        return None
    kind = QUOTA_ENTITY_TYPES[args.entity_type]
    if args.entity_default:
        return [(kind, None)]
    return [(kind, args.entity_name if args.entity_name is not None else "")]


def _quota_text(entity: list[tuple[str, str | None]]) -> str:
    names = {"user": "user-principal", "client-id": "client-id"}
    return ", ".join(f"the default {names[t]}" if n is None else f"{names[t]} '{n}'"
                     for t, n in entity)


def describe_quotas(host: str, port: int, entity: list[tuple[str, str | None]]) -> int:
    """DescribeClientQuotas (confluent-kafka has no call for it); every entity of the type
    (named and default) when no name was given."""
    from strom.protocol.messages import make, request_module, request_schema

    mod = request_module(48, 1)
    if entity[0][1] == "":
        filters = [[(entity[0][0], 2, None)], [(entity[0][0], 1, None)]]
    else:
        filters = [[(t, 0 if n is not None else 1, n) for t, n in entity]]
    for components in filters:
        request = make(request_schema(48, 1), strict=True, components=tuple(
            make(mod.ComponentData, entity_type=t, match_type=m, match=n)
            for t, m, n in components))
        result = _send(host, port, request)
        _check(result.error_code, result.error_message)
        for e in result.entries or ():
            values = ", ".join(f"{v.key}={float(v.value)}" for v in e.values)
            who = _quota_text([(x.entity_type, x.entity_name) for x in e.entity])
            print(f"Quota configs for {who} are {values}")
    return 0


def alter_quotas(host: str, port: int, entity: list[tuple[str, str | None]],
                 added: dict[str, str], deleted: list[str], quiet: bool = False) -> int:
    from strom.protocol.messages import make, request_module, request_schema

    if any(n == "" for _, n in entity):
        raise ToolError("an entity name (--entity-name, or --entity-default) is required "
                        "with --alter")
    ops = []
    for key, value in added.items():
        try:
            ops.append((key, float(value), False))
        except ValueError:
            raise ToolError(f"Cannot parse quota configuration value for {key}: "
                            f"{value}") from None
    ops += [(key, 0.0, True) for key in deleted]
    if not ops:
        raise ToolError("--alter needs --add-config and/or --delete-config")
    mod = request_module(49, 1)
    request = make(request_schema(49, 1), validate_only=False, entries=(make(
        mod.EntryData, entity=tuple(make(mod.EntityData, entity_type=t, entity_name=n)
                                    for t, n in entity),
        ops=tuple(make(mod.OpData, key=k, value=v, remove=r) for k, v, r in ops)),))
    result = _send(host, port, request).entries[0]
    _check(result.error_code, result.error_message)
    if quiet:
        return 0
    if len(entity) == 1 and entity[0][1] is None:
        kind = "users" if entity[0][0] == "user" else "clients"
        print(f"Completed updating default config for {kind} in the cluster.")
    else:
        print("Completed updating config for " + ", ".join(
            f"{'user' if t == 'user' else 'client'} {'<default>' if n is None else n}"
            for t, n in entity) + ".")
    return 0


def _users_and_clients(args: argparse.Namespace, action: str,
                       entity: list[tuple[str, str | None]]) -> int:
    """Users and clients: client quotas, and a user's SCRAM credentials (scram_configs),
    together as kafka-configs does."""
    from confluent_kafka.admin import AdminClient

    host, port = _first_broker(args.bootstrap_server)
    one_user = len(entity) == 1 and entity[0][0] == "user"
    admin = AdminClient(client_config(args.bootstrap_server, args.command_config))
    if action == "describe":
        describe_quotas(host, port, entity)
        if one_user and entity[0][1] is not None:
            scram_configs.describe(admin, entity[0][1] or None)
        return 0
    added = parse_add_config(args.add_config) if args.add_config else {}
    deleted = [k.strip() for item in args.delete_config for k in item.split(",")
               if k.strip()]
    scram_added = {k: v for k, v in added.items() if scram_configs.is_scram(k)}
    scram_deleted = [k for k in deleted if scram_configs.is_scram(k)]
    if scram_added or scram_deleted:
        if not one_user or not entity[0][1]:
            raise ToolError("SCRAM credentials are set on one named user "
                            "(--entity-type users --entity-name NAME)")
        quota_added = {k: v for k, v in added.items() if k not in scram_added}
        quota_deleted = [k for k in deleted if k not in scram_deleted]
        if quota_added or quota_deleted:
            alter_quotas(host, port, entity, quota_added, quota_deleted, quiet=True)
        return scram_configs.alter(admin, entity[0][1], scram_added, scram_deleted)
    return alter_quotas(host, port, entity, added, deleted)


def run(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    action = chosen_action(args, ACTIONS)
    try:
        quota_entity = _quota_entity(args)
        if quota_entity is not None:
            return _users_and_clients(args, action, quota_entity)
        if action == "describe" and (args.add_config or args.delete_config):
            raise ToolError("--add-config and --delete-config can only be used with --alter")
        if args.all and action != "describe":
            raise ToolError("--all can only be used with --describe")
        conf = client_config(args.bootstrap_server, args.command_config)
        return (describe if action == "describe" else alter)(AdminClient(conf), args)
    except (*client_errors(), TimeoutError) as e:
        print(f"Error while executing config command : {error_text(e)}", file=sys.stderr)
        return 1
