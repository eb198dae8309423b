"""ACLs as Kafka models them: bindings, filters, and the rules that match them.

An ACL binding is a resource pattern (resource type, name, pattern type) and an entry
(principal, host, operation, permission type). The enums carry Kafka's wire codes (the
`AclOperation`, `ResourceType`, `PatternType`, `AclPermissionType` of kafka-clients) and
the names Kafka writes in ZooKeeper. Pure functions only: the authorizer
(strom.security.authorizer) owns the ACLs.

Matching, as Kafka's AclAuthorizer and StandardAuthorizer:
- a resource is covered by LITERAL patterns of its name, the LITERAL wildcard `*`, and
  PREFIXED patterns its name starts with;
- an entry applies to a principal equal to it or `User:*`, and a host equal to it or `*`;
- an operation is allowed by an ALLOW of itself or ALL; DESCRIBE is also allowed by READ,
  WRITE, DELETE or ALTER, and DESCRIBE_CONFIGS by ALTER_CONFIGS; a DENY of the operation or
  of ALL wins over any ALLOW (implication does not apply to DENY).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
CLUSTER_NAME = "kafka-cluster"


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class PermissionType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


# The names Kafka uses in ZooKeeper paths and JSON (and kafka-acls' output), by enum member
def zk_name(member: enum.Enum) -> str:
    """TOPIC -> Topic, TRANSACTIONAL_ID -> TransactionalId, DESCRIBE_CONFIGS ->
    DescribeConfigs."""
    return "".join(word.capitalize() for word in member.name.split("_"))


def from_zk_name(cls: type[enum.Enum], name: str):
    for member in cls:
        if zk_name(member).lower() == name.replace("_", "").replace("-", "").lower():
            return member
    raise ValueError(f"unknown {cls.__name__} {name!r}")


def enum_of(cls: type[enum.IntEnum], code: int):
    """The member for a wire code; UNKNOWN for a code this version does not know."""
    try:
        return cls(code)
    except ValueError:
        return cls(0)


# Operations a resource type supports (Kafka's AclEntry.supportedOperations): what
# authorized_operations fields are made of
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    ResourceType.TOPIC: (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE,
                         AclOperation.DESCRIBE, AclOperation.DELETE, AclOperation.ALTER,
                         AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS),
    ResourceType.GROUP: (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE),
    ResourceType.CLUSTER: (AclOperation.CREATE, AclOperation.CLUSTER_ACTION,
                           AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
                           AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
                           AclOperation.DESCRIBE),
    ResourceType.TRANSACTIONAL_ID: (AclOperation.DESCRIBE, AclOperation.WRITE),
    ResourceType.DELEGATION_TOKEN: (AclOperation.DESCRIBE,),
    ResourceType.USER: (AclOperation.CREATE_TOKENS, AclOperation.DESCRIBE_TOKENS),
}

# operation asked -> ALLOWs that also grant it
_IMPLIED_BY: dict[AclOperation, frozenset[AclOperation]] = {
    AclOperation.DESCRIBE: frozenset({AclOperation.DESCRIBE, AclOperation.READ,
                                      AclOperation.WRITE, AclOperation.DELETE,
                                      AclOperation.ALTER}),
    AclOperation.DESCRIBE_CONFIGS: frozenset({AclOperation.DESCRIBE_CONFIGS,
                                              AclOperation.ALTER_CONFIGS}),
}


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType

    def covers(self, resource_type: ResourceType, name: str) -> bool:
        """Whether this (stored, LITERAL or PREFIXED) pattern applies to a resource."""
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.name == name or self.name == WILDCARD
        return self.pattern_type == PatternType.PREFIXED and name.startswith(self.name)


@dataclass(frozen=True, slots=True)
class AccessControlEntry:
    principal: str
    host: str
    operation: AclOperation
    permission: PermissionType

    def applies_to(self, principal: str, host: str) -> bool:
        return (self.principal == principal or self.principal == WILDCARD_PRINCIPAL) and \
            (self.host == host or self.host == WILDCARD)

    def grants(self, operation: AclOperation) -> bool:
        """An ALLOW entry's operation gives `operation` (with Kafka's implications)."""
        if self.operation == AclOperation.ALL:
            return True
        return self.operation in _IMPLIED_BY.get(operation, frozenset({operation}))

    def forbids(self, operation: AclOperation) -> bool:
        """A DENY entry's operation takes `operation` away (no implication)."""
        return self.operation in (operation, AclOperation.ALL)


@dataclass(frozen=True, slots=True)
class AclBinding:
    pattern: ResourcePattern
    entry: AccessControlEntry


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """A DescribeAcls / DeleteAcls filter; None (null on the wire) matches anything."""

    resource_type: ResourceType
    name: str | None
    pattern_type: PatternType
    principal: str | None
    host: str | None
    operation: AclOperation
    permission: PermissionType

    def problem(self) -> str | None:
        """Why Kafka refuses this filter (INVALID_REQUEST), or None."""
        for what, value in (("resourceType", self.resource_type),
                            ("patternType", self.pattern_type),
                            ("operation", self.operation),
                            ("permissionType", self.permission)):
            if value == 0:
                return f"Filter contains UNKNOWN elements ({what})"
        return None

    def matches(self, binding: AclBinding) -> bool:
        p, e = binding.pattern, binding.entry
        if self.resource_type not in (ResourceType.ANY, p.resource_type):
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.name is not None and not (
                    (p.pattern_type == PatternType.LITERAL
                     and p.name in (self.name, WILDCARD))
                    or (p.pattern_type == PatternType.PREFIXED
                        and self.name.startswith(p.name))):
                return False
        else:
            if self.pattern_type not in (PatternType.ANY, p.pattern_type):
                return False
            if self.name is not None and self.name != p.name:
                return False
        return (self.principal is None or self.principal == e.principal) and \
            (self.host is None or self.host == e.host) and \
            self.operation in (AclOperation.ANY, e.operation) and \
            self.permission in (PermissionType.ANY, e.permission)


def binding_problem(binding: AclBinding) -> str | None:
    """Why Kafka refuses to create this ACL (INVALID_REQUEST, with Kafka's messages from
    KafkaApis and AclControlManager), or None."""
    p, e = binding.pattern, binding.entry
    if p.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        return f"Invalid resourceType {p.resource_type.name}"
    if p.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        return f"Invalid patternType {p.pattern_type.name}"
    if e.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
        return f"Invalid operation {e.operation.name}"
    if e.permission not in (PermissionType.ALLOW, PermissionType.DENY):
        return f"Invalid permissionType {e.permission.name}"
    if not p.name:
        return "Invalid empty resource name"
    if p.resource_type == ResourceType.CLUSTER and p.name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    kind, sep, name = e.principal.partition(":")
    if not sep or not kind or not name:
        return f"Could not parse principal from `{e.principal}` (no colon is present " \
               "separating the principal type from the principal name)"
    if not e.host:
        return "Invalid empty host"
    return None


def authorize(bindings: list[AclBinding], principal: str, host: str,
              operation: AclOperation, allow_if_no_acl: bool) -> bool:
    """Kafka's decision over the bindings that cover one resource (all principals)."""
    if not bindings:
        return allow_if_no_acl
    entries = [b.entry for b in bindings if b.entry.applies_to(principal, host)]
    if any(e.permission == PermissionType.DENY and e.forbids(operation) for e in entries):
        return False
    return any(e.permission == PermissionType.ALLOW and e.grants(operation) for e in entries)
