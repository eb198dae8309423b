"""DescribeUserScramCredentials (key 50) and AlterUserScramCredentials (key 51), version 0.

Behaviour, as Kafka's ZooKeeper-mode broker: credentials live in /config/users/<user>
(strom.security.credentials). Describe with no users lists every user that has one;
a user without credentials is RESOURCE_NOT_FOUND, a user named twice DUPLICATE_RESOURCE.
Alter applies each user's deletions and upsertions together (the client sends the salt and
the salted password; the broker derives StoredKey and ServerKey). Per user: an unknown
mechanism is UNSUPPORTED_SASL_MECHANISM, iterations outside 4096..16384 or an empty name
UNACCEPTABLE_CREDENTIAL, the same user and mechanism twice DUPLICATE_RESOURCE, deleting a
credential that does not exist RESOURCE_NOT_FOUND; such a user is not changed at all.
Mechanism codes: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
"""

from __future__ import annotations

from collections import Counter

from strom.api.answers import request_error
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema
from strom.security.credentials import ScramCredentials
from strom.security.scram import HASHES, MAX_ITERATIONS, MIN_ITERATIONS, credential_from_salted

DESCRIBE, ALTER = 50, 51
MECHANISMS = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
CODES = {name: code for code, name in MECHANISMS.items()}


def _credentials(ctx: RequestContext) -> ScramCredentials:
    return ScramCredentials(ctx.broker.controller.store)


@register(DESCRIBE, "describe_user_scram_credentials", 0, 0)
async def describe(ctx: RequestContext, request):
    mod = response_module(DESCRIBE, ctx.version)
    store = _credentials(ctx)
    try:
        names = [u.name for u in request.users] if request.users else await store.users()
    except StoreError as exc:
        e = request_error(exc)
        return make(response_schema(DESCRIBE, ctx.version), error_code=e.code,
                    error_message=e.message, results=())
    counts = Counter(names)
    results = []
    for name in dict.fromkeys(names):
        error, message, infos = ErrorCode.none, None, ()
        if counts[name] > 1:
            error = ErrorCode.duplicate_resource
            message = f"Cannot describe SCRAM credentials for the same user twice in a " \
                      f"single request: {name}"
        else:
            try:
                described = await store.describe(name)
            except StoreError as exc:
                e = request_error(exc)
                error, message, described = e.code, e.message, None
            if described is not None and not described:
                error = ErrorCode.resource_not_found
                message = f"Attempt to describe a user credential that does not exist: {name}"
            infos = tuple(make(mod.CredentialInfo, mechanism=CODES[m], iterations=i)
                          for m, i in sorted((described or {}).items()))
        results.append(make(mod.DescribeUserScramCredentialsResult, user=name,
                            error_code=error, error_message=message, credential_infos=infos))
    return make(response_schema(DESCRIBE, ctx.version), error_code=ErrorCode.none,
                error_message=None, results=tuple(results))


@register(ALTER, "alter_user_scram_credentials", 0, 0)
async def alter(ctx: RequestContext, request):
    mod = response_module(ALTER, ctx.version)
    store = _credentials(ctx)
    pairs = Counter([(d.name, d.mechanism) for d in request.deletions] +
                    [(u.name, u.mechanism) for u in request.upsertions])
    users = dict.fromkeys([d.name for d in request.deletions] +
                          [u.name for u in request.upsertions])
    results = []
    for user in users:
        error, message = ErrorCode.none, None
        try:
            deletions = {_mechanism(d.mechanism) for d in request.deletions if d.name == user}
            upserts = {}
            for u in request.upsertions:
                if u.name != user:
                    continue
                mechanism = _mechanism(u.mechanism)
                if u.iterations < MIN_ITERATIONS:
                    raise KafkaError("Too few iterations", ErrorCode.unacceptable_credential)
                if u.iterations > MAX_ITERATIONS:
                    raise KafkaError("Too many iterations", ErrorCode.unacceptable_credential)
                upserts[mechanism] = credential_from_salted(
                    HASHES[mechanism], u.salted_password, u.salt, u.iterations)
            if not user:
                raise KafkaError("Username must not be empty", ErrorCode.unacceptable_credential)
            if any(pairs[(user, CODES[m])] > 1 for m in deletions | set(upserts)):
                raise KafkaError("A user credential cannot be altered twice in the same "
                                 "request", ErrorCode.duplicate_resource)
            existing = await store.describe(user)
            missing = [m for m in deletions if m not in existing]
            if missing:
                raise KafkaError("Attempt to delete a user credential that does not exist",
                                 ErrorCode.resource_not_found)
            await store.alter(user, upserts, deletions)
        except (KafkaError, StoreError) as exc:
            e = request_error(exc)
            error, message = e.code, e.message
        results.append(make(mod.AlterUserScramCredentialsResult, user=user, error_code=error,
                            error_message=message))
    return make(response_schema(ALTER, ctx.version), results=tuple(results))


def _mechanism(code: int) -> str:
    name = MECHANISMS.get(code)
    if name is None:
        raise KafkaError("Unknown SCRAM mechanism", ErrorCode.unsupported_sasl_mechanism)
    return name
