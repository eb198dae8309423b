"""The authorizer: Kafka's ACL authorizer over the MetadataStore, with an in-memory cache.

Switched on as in Kafka, by `authorizer.class.name` (Kafka's
`kafka.security.authorizer.AclAuthorizer` and
`org.apache.kafka.metadata.authorizer.StandardAuthorizer` both name this one:
`config.AUTHORIZER_CLASS_NAMES`); without it
every request is allowed and the ACL APIs answer SECURITY_DISABLED. `super.users`
(`User:a;User:b`) pass every check; a resource no ACL covers is allowed only when
`allow.everyone.if.no.acl.found` is true.

Storage, Kafka's ZooKeeper layout (on both store backends):

  /kafka-acl/<ResourceType>/<name>                   LITERAL patterns
  /kafka-acl-extended/prefixed/<ResourceType>/<name> PREFIXED patterns
      {"version":1,"acls":[{"principal":"User:alice","permissionType":"Allow",
                            "operation":"Read","host":"*"}]}
  /kafka-acl-changes/acl_changes_<10 digits>          "<ResourceType>:<name>" (LITERAL)
  /kafka-acl-extended-changes/acl_changes_<10 digits> {"version":1,"resourceType":"Topic",
                                                       "name":"t","patternType":"Prefixed"}

A write changes a resource's node with compare-and-set on its version (retried when
another broker moved it), then adds a change notification; every broker watches both
change paths and re-reads the named resources, so all caches follow without a restart.
Notifications beyond the newest `KEEP_NOTIFICATIONS` are deleted by the writer.

State: `acls` (pattern -> entries) is owned by the event loop; the decisions read it
synchronously, so a check never waits on the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from strom.cluster.store import BadVersionError, MetadataStore, NodeExistsError, NoNodeError
from strom.security.acls import (
    SUPPORTED_OPERATIONS,
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    PatternType,
    PermissionType,
    ResourcePattern,
    ResourceType,
    authorize,
    from_zk_name,
    zk_name,
)
from strom.tasks import spawn

log = logging.getLogger(__name__)

ACL_PATH = "/kafka-acl"
PREFIXED_PATH = "/kafka-acl-extended/prefixed"
CHANGES_PATH = "/kafka-acl-changes"
EXTENDED_CHANGES_PATH = "/kafka-acl-extended-changes"
CHANGE_PREFIX = "acl_changes_"
KEEP_NOTIFICATIONS = 100
_STORED_TYPES = (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER,
                 ResourceType.TRANSACTIONAL_ID, ResourceType.DELEGATION_TOKEN,
                 ResourceType.USER)


def parse_super_users(text: str | None) -> frozenset[str]:
    """Kafka's `super.users`: principals separated by ';'."""
    return frozenset(p.strip() for p in (text or "").split(";") if p.strip())


def node_path(pattern: ResourcePattern) -> str:
    base = ACL_PATH if pattern.pattern_type == PatternType.LITERAL else PREFIXED_PATH
    return f"{base}/{zk_name(pattern.resource_type)}/{pattern.name}"


def encode_entries(entries: Iterable[AccessControlEntry]) -> bytes:
    return json.dumps({"version": 1, "acls": [
        {"principal": e.principal, "permissionType": zk_name(e.permission),
         "operation": zk_name(e.operation), "host": e.host}
        for e in sorted(entries, key=lambda e: (e.principal, e.host, e.operation,
                                                e.permission))]}).encode()


def decode_entries(data: bytes) -> set[AccessControlEntry]:
    if not data:
        return set()
    doc = json.loads(data)
    return {AccessControlEntry(a["principal"], a["host"],
                               from_zk_name(AclOperation, a["operation"]),
                               from_zk_name(PermissionType, a["permissionType"]))
            for a in doc.get("acls", ())}


class Authorizer:
    """Decisions for one broker (`authorize`, `authorized_operations`) and the ACL
    administration behind CreateAcls / DescribeAcls / DeleteAcls."""

    def __init__(self, store: MetadataStore, super_users: frozenset[str],
                 allow_if_no_acl: bool) -> None:
        self.store = store
        self.super_users = super_users
        self.allow_if_no_acl = allow_if_no_acl
        self.acls: dict[ResourcePattern, frozenset[AccessControlEntry]] = {}
        self._tasks: set = set()
        self._reloads_started = 0
        self._reload_applied = 0

    # --- start-up and following changes ------------------------------------------------
    async def start(self) -> None:
        for path in (CHANGES_PATH, EXTENDED_CHANGES_PATH):
            try:
                await self.store.create(path, b"")
            except NodeExistsError:
                pass
            self.store.watch_children(path, self._on_change)
        await self.reload()

    def _on_change(self, _path: str) -> None:
        spawn(self.reload(), "reload ACLs", self._tasks)

    async def reload(self) -> None:
        """Re-read every stored pattern (ACLs are few; a whole re-read keeps it simple and
        cannot miss a change). A re-read that ends after a later one is dropped."""
        self._reloads_started += 1
        number = self._reloads_started
        fresh: dict[ResourcePattern, frozenset[AccessControlEntry]] = {}
        for base, pattern_type in ((ACL_PATH, PatternType.LITERAL),
                                   (PREFIXED_PATH, PatternType.PREFIXED)):
            for rtype in _STORED_TYPES:
                type_path = f"{base}/{zk_name(rtype)}"
                for name in await self.store.get_children(type_path):
                    node = await self.store.get(f"{type_path}/{name}")
                    if node is None:
                        continue
                    try:
                        entries = decode_entries(node[0])
                    except (ValueError, KeyError) as e:
                        log.error("Ignoring unreadable ACLs at %s/%s: %s", type_path, name, e)
                        continue
                    if entries:
                        fresh[ResourcePattern(rtype, name, pattern_type)] = \
                            frozenset(entries)
        if number > self._reload_applied:
            self._reload_applied = number
            self.acls = fresh

    # --- decisions ------------------------------------------------------------------------
    def authorize(self, principal: str, host: str, operation: AclOperation,
                  resource_type: ResourceType, name: str) -> bool:
        if principal in self.super_users:
            return True
        bindings = [AclBinding(p, e) for p, entries in self.acls.items()
                    if p.covers(resource_type, name) for e in entries]
        allowed = authorize(bindings, principal, host, operation, self.allow_if_no_acl)
        if not allowed:
            log.debug("Principal = %s is Denied operation = %s from host = %s on resource "
                      "= %s:%s", principal, operation.name, host, resource_type.name, name)
        return allowed

    def authorize_by_resource_type(self, principal: str, host: str,
                                   operation: AclOperation,
                                   resource_type: ResourceType) -> bool:
        """Whether some resource of the type may get `operation` (Kafka's
        authorizeByResourceType, used by InitProducerId without a transactional id): an
        ALLOW on any pattern, unless a wildcard DENY takes the operation away."""
        if principal in self.super_users:
            return True
        typed = {p: entries for p, entries in self.acls.items()
                 if p.resource_type == resource_type}
        if not typed:
            return self.allow_if_no_acl
        mine = [(p, e) for p, entries in typed.items() for e in entries
                if e.applies_to(principal, host)]
        if any(e.permission == PermissionType.DENY and e.forbids(operation)
               and p.pattern_type == PatternType.LITERAL and p.name == "*"
               for p, e in mine):
            return False
        return any(e.permission == PermissionType.ALLOW and e.grants(operation)
                   for _, e in mine)

    def authorized_operations(self, principal: str, host: str,
                              resource_type: ResourceType, name: str) -> int:
        """Kafka's 32-bit field of the operations allowed on a resource."""
        bits = 0
        for op in SUPPORTED_OPERATIONS[resource_type]:
            if self.authorize(principal, host, op, resource_type, name):
                bits |= 1 << op
        return bits

    # --- administration -------------------------------------------------------------------
    def describe(self, flt: AclBindingFilter) -> list[AclBinding]:
        return sorted((AclBinding(p, e) for p, entries in self.acls.items() for e in entries
                       if flt.matches(AclBinding(p, e))), key=_order)

    async def create(self, bindings: list[AclBinding]) -> None:
        by_pattern: dict[ResourcePattern, set[AccessControlEntry]] = {}
        for b in bindings:
            by_pattern.setdefault(b.pattern, set()).add(b.entry)
        for pattern, entries in by_pattern.items():
            await self._update(pattern, lambda current, add=entries: current | add)

    async def delete(self, filters: list[AclBindingFilter]) -> list[list[AclBinding]]:
        """The bindings each filter deleted (a binding matched by two filters is reported
        under the first)."""
        await self.reload()  # match what the store holds now, not a stale cache
        matched: list[list[AclBinding]] = []
        seen: set[AclBinding] = set()
        for flt in filters:
            found = [b for b in self.describe(flt) if b not in seen]
            seen.update(found)
            matched.append(found)
        by_pattern: dict[ResourcePattern, set[AccessControlEntry]] = {}
        for b in seen:
            by_pattern.setdefault(b.pattern, set()).add(b.entry)
        for pattern, entries in by_pattern.items():
            await self._update(pattern, lambda current, gone=entries: current - gone)
        return matched

    async def _update(self, pattern: ResourcePattern, change) -> None:
        """Compare-and-set the pattern's node until the change lands, then notify."""
        path = node_path(pattern)
        while True:
            node = await self.store.get(path)
            current = decode_entries(node[0]) if node else set()
            wanted = change(current)
            if wanted == current:
                return
            try:
                if node is None:
                    await self.store.create(path, encode_entries(wanted))
                elif wanted:
                    await self.store.set(path, encode_entries(wanted), node[1])
                else:
                    await self.store.delete(path, node[1])
                break
            except (BadVersionError, NodeExistsError, NoNodeError):
                continue
        await self._notify(pattern)
        # re-read: this broker answers with the change in force, and a re-read started
        # before the write (by an older notification) can no longer win
        await self.reload()

    async def _notify(self, pattern: ResourcePattern) -> None:
        if pattern.pattern_type == PatternType.LITERAL:
            base = CHANGES_PATH
            data = f"{zk_name(pattern.resource_type)}:{pattern.name}".encode()
        else:
            base = EXTENDED_CHANGES_PATH
            data = json.dumps({"version": 1, "resourceType": zk_name(pattern.resource_type),
                               "name": pattern.name,
                               "patternType": zk_name(pattern.pattern_type)}).encode()
        # a persistent sequential node, numbered as ZooKeeper numbers them
        while True:
            children = sorted(c for c in await self.store.get_children(base)
                              if c.startswith(CHANGE_PREFIX))
            seq = int(children[-1][len(CHANGE_PREFIX):]) + 1 if children else 0
            try:
                await self.store.create(f"{base}/{CHANGE_PREFIX}{seq:010d}", data)
                break
            except NodeExistsError:
                continue
        for old in children[:max(0, len(children) + 1 - KEEP_NOTIFICATIONS)]:
            try:
                await self.store.delete(f"{base}/{old}")
            except NoNodeError:
                pass


def _order(b: AclBinding):
    return (b.pattern.resource_type, b.pattern.pattern_type, b.pattern.name,
            b.entry.principal, b.entry.host, b.entry.operation, b.entry.permission)
