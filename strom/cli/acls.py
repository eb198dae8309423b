"""Add, remove and list ACLs (like Kafka's kafka-acls.sh), through CreateAcls, DeleteAcls
and DescribeAcls; the broker must run with an authorizer (`authorizer.class.name`).

Bindings are every combination of the principals (--allow-principal / --deny-principal),
hosts (--allow-host / --deny-host, default `*`) and operations (--operation, default All
for --add) on every resource given (--topic, --group, --cluster, --transactional-id;
the cluster's pattern is always literal). --producer and --consumer add the operations
those clients need (producer: Write, Describe, Create on the topics, IdempotentWrite on
the cluster with --idempotent, Write and Describe on --transactional-id; consumer: Read
and Describe on the topics, Read on the group). --remove with no principal removes every ACL of the resource
pattern; --list shows the ACLs of the resources given (all of them when none is), filtered
by --principal. kafka-acls asks before removing unless --force: strom never asks.

examples:
  strom acls --add --allow-principal User:alice --operation Read --topic orders
  strom acls --add --allow-principal User:bob --producer --topic logs- \\
      --resource-pattern-type prefixed
  strom acls --add --deny-principal User:mallory --operation All --topic '*'
  strom acls --list --topic orders
  strom acls --remove --allow-principal User:alice --operation Read --topic orders
"""

from __future__ import annotations

import argparse
import sys

from strom.cli._common import (
    ToolError,
    add_actions,
    add_bootstrap_argument,
    add_command_config_argument,
    add_flags,
    chosen_action,
    client_config,
    client_errors,
    error_text,
)

TIMEOUT = 30.0
ACTIONS = ("add", "remove", "list")
CLUSTER_NAME = "kafka-cluster"
PATTERN_TYPES = ("literal", "prefixed", "match", "any")
OPERATIONS = ("Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
              "DescribeConfigs", "AlterConfigs", "IdempotentWrite", "CreateTokens",
              "DescribeTokens", "All")
# kafka-acls' check: the operations each resource type takes ("All" on every one)
SUPPORTED = {
    "TOPIC": {"Read", "Write", "Create", "Describe", "Delete", "Alter", "DescribeConfigs",
              "AlterConfigs", "All"},
    "GROUP": {"Read", "Describe", "Delete", "All"},
    "CLUSTER": {"Create", "ClusterAction", "DescribeConfigs", "AlterConfigs",
                "IdempotentWrite", "Alter", "Describe", "All"},
    "TRANSACTIONAL_ID": {"Describe", "Write", "All"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    add_command_config_argument(parser)
    add_actions(parser, {
        "--add": "add the ACLs given",
        "--remove": "remove the ACLs given (all ACLs of the resource without a principal)",
        "--list": "list the ACLs of the resources given (all ACLs without a resource)",
    })
    for flag, what in (("--allow-principal", "principal allowed, e.g. User:alice"),
                       ("--deny-principal", "principal denied, e.g. User:mallory"),
                       ("--allow-host", "host the allowed principals come from (default *)"),
                       ("--deny-host", "host the denied principals come from (default *)"),
                       ("--operation", f"operation: {', '.join(OPERATIONS)}"),
                       ("--topic", "topic (or prefix; * for all topics)"),
                       ("--group", "consumer group (or prefix; * for all groups)"),
                       ("--transactional-id", "transactional id (or prefix; * for all)"),
                       ("--principal", "with --list: only this principal's ACLs")):
        parser.add_argument(flag, action="append", default=[], help=what + " (repeatable)")
    parser.add_argument("--resource-pattern-type", default="literal",
                        type=str.lower, choices=PATTERN_TYPES,
                        help="literal (default) or prefixed; --list and --remove also take "
                             "match and any")
    add_flags(parser, {
        "--cluster": "the cluster resource",
        "--producer": "the ACLs a producer needs (with --topic, --transactional-id)",
        "--consumer": "the ACLs a consumer needs (with --topic and --group)",
        "--idempotent": "with --producer: IdempotentWrite on the cluster",
        "--force": "accepted for kafka-acls compatibility (strom never asks)",
    })


def _operation(text: str) -> str:
    for op in OPERATIONS:
        if op.lower() == text.replace("_", "").replace("-", "").lower():
            return op
    raise ToolError(f"Invalid operation {text!r}; valid ones: {', '.join(OPERATIONS)}")


def _resources(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = [("TOPIC", t) for t in args.topic] + [("GROUP", g) for g in args.group]
    out += [("TRANSACTIONAL_ID", t) for t in args.transactional_id]
    if args.cluster:
        out.append(("CLUSTER", CLUSTER_NAME))
    return out


def _operations_by_resource(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(resource type, name, operations) to add or remove."""
    resources = _resources(args)
    if args.producer or args.consumer:
        if args.operation:
            raise ToolError("--operation cannot be used with --producer or --consumer")
        out: list[tuple[str, str, list[str]]] = []
        topics = [r for r in resources if r[0] == "TOPIC"]
        if not topics:
            raise ToolError("With --producer or --consumer you must specify a --topic")
        if args.producer:
            out += [(t, n, ["Write", "Describe", "Create"]) for t, n in topics]
            out += [("TRANSACTIONAL_ID", n, ["Write", "Describe"])
                    for t, n in resources if t == "TRANSACTIONAL_ID"]
            if args.idempotent:
                out.append(("CLUSTER", CLUSTER_NAME, ["IdempotentWrite"]))
        if args.consumer:
            groups = [r for r in resources if r[0] == "GROUP"]
            if not groups:
                raise ToolError("With --consumer you must specify a --group")
            out += [(t, n, ["Read", "Describe"]) for t, n in topics]
            out += [(t, n, ["Read"]) for t, n in groups]
        return out
    ops = [_operation(o) for o in args.operation] or (["All"] if args.add else [])
    for rtype, _ in resources:
        unsupported = [o for o in ops if o not in SUPPORTED[rtype]]
        if unsupported:
            raise ToolError(f"ResourceType {rtype} only supports operations "
                            f"{', '.join(sorted(SUPPORTED[rtype]))}")
    return [(t, n, ops) for t, n in resources]


def _entries(args: argparse.Namespace, ops: list[str]) -> list[tuple[str, str, str, str]]:
    """(principal, host, operation, permission) for every combination given."""
    out = []
    for principals, hosts, permission in ((args.allow_principal, args.allow_host, "ALLOW"),
                                          (args.deny_principal, args.deny_host, "DENY")):
        for p in principals:
            if ":" not in p:
                raise ToolError(f"Could not parse principal from `{p}` (no colon is present "
                                "separating the principal type from the principal name)")
            for h in hosts or ["*"]:
                out += [(p, h, op, permission) for op in ops]
    return out


def _ck():
    from confluent_kafka import admin as ck

    return ck


def _ck_type(ck, rtype: str):
    """confluent-kafka names ACL resource type 4 (Kafka's CLUSTER) BROKER."""
    return ck.ResourceType.BROKER if rtype == "CLUSTER" else getattr(ck.ResourceType, rtype)


def _type_name(restype) -> str:
    return "CLUSTER" if restype.name == "BROKER" else restype.name


def _ck_operation(ck, op: str):
    import re

    return getattr(ck.AclOperation, re.sub(r"(?<!^)(?=[A-Z])", "_", op).upper())


def _pattern(args: argparse.Namespace, rtype: str):
    """The pattern type given, except for the cluster, whose one name is always literal."""
    name = "literal" if rtype == "CLUSTER" and args.resource_pattern_type == "prefixed" \
        else args.resource_pattern_type
    return getattr(_ck().ResourcePatternType, name.upper())


def _print_bindings(title: str, bindings) -> None:
    by_pattern: dict[tuple, list] = {}
    for b in bindings:
        key = (_type_name(b.restype), b.name, b.resource_pattern_type.name)
        by_pattern.setdefault(key, []).append(b)
    for (rtype, name, pattern), group in by_pattern.items():
        print(f"{title} `ResourcePattern(resourceType={rtype}, name={name}, "
              f"patternType={pattern})`: ")
        for b in group:
            print(f" \t(principal={b.principal}, host={b.host}, "
                  f"operation={b.operation.name}, permissionType={b.permission_type.name}) ")
        print()


def add(admin, args: argparse.Namespace) -> int:
    ck = _ck()
    if args.resource_pattern_type not in ("literal", "prefixed"):
        raise ToolError("A '--resource-pattern-type' value of 'literal' or 'prefixed' is "
                        "required with --add")
    if not args.allow_principal and not args.deny_principal:
        raise ToolError("You must specify one of: --allow-principal, --deny-principal when "
                        "trying to add ACLs.")
    bindings = []
    for rtype, name, ops in _operations_by_resource(args):
        for principal, host, op, permission in _entries(args, ops):
            bindings.append(ck.AclBinding(
                _ck_type(ck, rtype), name, _pattern(args, rtype), principal, host,
                _ck_operation(ck, op), getattr(ck.AclPermissionType, permission)))
    if not bindings:
        raise ToolError("You must specify a resource: --topic, --group, --cluster, "
                        "--transactional-id")
    _print_bindings("Adding ACLs for resource", bindings)
    for f in admin.create_acls(bindings, request_timeout=TIMEOUT).values():
        f.result(timeout=TIMEOUT)
    return list_(admin, args)


def _filters(args: argparse.Namespace, with_entries: bool) -> list:
    ck = _ck()
    resources = _operations_by_resource(args) if with_entries else \
        [(t, n, []) for t, n in _resources(args)]
    filters = []
    for rtype, name, ops in resources:
        entries = _entries(args, ops or ["All"]) if with_entries else []
        if with_entries and not args.operation and not (args.producer or args.consumer):
            entries = [(p, h, None, perm) for p, h, _, perm in entries]
        for principal, host, op, permission in entries or [(None, None, None, None)]:
            filters.append(ck.AclBindingFilter(
                _ck_type(ck, rtype), name, _pattern(args, rtype), principal, host,
                _ck_operation(ck, op) if op else ck.AclOperation.ANY,
                getattr(ck.AclPermissionType, permission) if permission
                else ck.AclPermissionType.ANY))
    return filters


def remove(admin, args: argparse.Namespace) -> int:
    filters = _filters(args, with_entries=bool(args.allow_principal or args.deny_principal))
    if not filters:
        raise ToolError("You must specify a resource: --topic, --group, --cluster, "
                        "--transactional-id")
    removed = []
    for f in admin.delete_acls(filters, request_timeout=TIMEOUT).values():
        removed += f.result(timeout=TIMEOUT)
    _print_bindings("Removed ACLs for resource", removed)
    return 0


def list_(admin, args: argparse.Namespace) -> int:
    ck = _ck()
    filters = _filters(args, with_entries=False) if _resources(args) else [
        ck.AclBindingFilter(ck.ResourceType.ANY, None, ck.ResourcePatternType.ANY, None, None,
                            ck.AclOperation.ANY, ck.AclPermissionType.ANY)]
    if args.add:  # after --add: what the resources now hold, whatever their pattern
        filters = [ck.AclBindingFilter(f.restype, f.name, f.resource_pattern_type, None, None,
                                       ck.AclOperation.ANY, ck.AclPermissionType.ANY)
                   for f in filters]
    found = []
    for flt in filters:
        for b in admin.describe_acls(flt, request_timeout=TIMEOUT).result(timeout=TIMEOUT):
            if (not args.principal or b.principal in args.principal) and b not in found:
                found.append(b)
    _print_bindings("Current ACLs for resource", found)
    return 0


def run(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    action = chosen_action(args, ACTIONS)
    try:
        if args.principal and action != "list":
            raise ToolError("--principal can only be used with --list")
        admin = AdminClient(client_config(args.bootstrap_server, args.command_config))
        return {"add": add, "remove": remove, "list": list_}[action](admin, args)
    except (*client_errors(), TimeoutError) as e:
        print(f"Error while executing ACL command: {error_text(e)}", file=sys.stderr)
        return 1
