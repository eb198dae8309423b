"""DescribeConfigs (32, v1-4), AlterConfigs (33, v0-2), IncrementalAlterConfigs (44, v0-1).

Behaviour: topic resources (type 2) show every topic config with its effective value and
source (DYNAMIC_TOPIC_CONFIG for an override, STATIC_BROKER_CONFIG when a broker synonym was
set in server.properties, DEFAULT_CONFIG otherwise), and, when asked, its synonyms in
precedence order. Broker resources (type 4) are this broker's id (every broker config,
its effective value and source: DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG,
STATIC_BROKER_CONFIG or DEFAULT_CONFIG, synonyms in Kafka's precedence) or "" (the
cluster-wide dynamic default: only the keys set there). Topic configs and dynamic broker
configs can be changed: AlterConfigs replaces a resource's set, IncrementalAlterConfigs
applies SET/DELETE/APPEND/SUBTRACT; both validate the whole resource first (INVALID_CONFIG,
nothing half-applied) and honour validate_only. Broker configs Kafka cannot change
dynamically are refused as Kafka refuses them (strom/cluster/broker_configs.py). Broker
loggers (type 8): the broker's Python loggers and their levels, set by
IncrementalAlterConfigs (broker_loggers.py).
With an authorizer: DescribeConfigs needs DESCRIBE_CONFIGS and the alters ALTER_CONFIGS, on
the topic (TOPIC_AUTHORIZATION_FAILED) or, for brokers and loggers, on the cluster
(CLUSTER_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from strom.api import broker_loggers
from strom.api.answers import refresh_after_write, request_error
from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster.broker_configs import DYNAMIC_KEYS, validate_broker_configs
from strom.cluster.store import StoreError
from strom.config import (
    BROKER_KEYS,
    TOPIC_KEYS,
    TOPIC_SYNONYMS,
    ConfigError,
    ConfigSource,
    ConfigType,
    TopicConfig,
    render,
    validate_topic_configs,
)
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema
from strom.security.acls import AclOperation

TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _topic_entries(ctx: RequestContext, mod, name: str, keys, synonyms: bool, docs: bool):
    info = ctx.broker.cache.topic(name)
    if info is None:
        raise KafkaError(f"Topic {name} does not exist", ErrorCode.unknown_topic_or_partition)
    config = TopicConfig.of(ctx.broker.config, info.configs)
    out = []
    for key in sorted(TOPIC_KEYS) if not keys else keys:
        if key not in TOPIC_KEYS:
            continue
        syn = config.synonyms(key) if synonyms else []
        out.append(make(mod.DescribeConfigsResourceResult, name=key,
                        value=render(config.get(key)), read_only=False,
                        config_source=int(config.source(key)), is_default=key not in
                        config.overrides, is_sensitive=False,
                        synonyms=tuple(make(mod.DescribeConfigsSynonym, name=n, value=v,
                                            source=int(src)) for n, v, src in syn),
                        config_type=int(TOPIC_KEYS[key].type),
                        documentation=TOPIC_KEYS[key].doc or None if docs else None))
    return tuple(out)


def _broker_of(ctx: RequestContext, name: str) -> int | None:
    """A broker resource's broker: None for the cluster default (""), else this broker's
    id (as Kafka, a broker describes and alters only itself and the default)."""
    if name == "":
        return None
    try:
        broker = int(name)
    except ValueError:
        raise KafkaError(f"Broker id must be an integer, but it is: {name}",
                         ErrorCode.invalid_request) from None
    if broker != ctx.broker.broker_id:
        raise KafkaError(f"Unexpected broker id, expected {ctx.broker.broker_id} but "
                         f"received {name}", ErrorCode.invalid_request)
    return broker


def _broker_synonyms(config, key: str, per_broker: bool) -> list[tuple[str, str | None,
                                                                     ConfigSource]]:
    """Kafka's synonyms of a broker config: by source (dynamic per-broker, dynamic
    default, static, default), within a source by name (log.retention.ms, .minutes,
    .hours), from `key` on."""
    group = next((g for g in TOPIC_SYNONYMS.values() if key in g and len(g) > 1), (key,))
    out = []
    for layer, src in config.layers():
        if src == ConfigSource.DYNAMIC_BROKER_CONFIG and not per_broker:
            continue
        out += [(n, render(layer[n]), src) for n in group if n in layer]
    out += [(n, render(BROKER_KEYS[n].default), ConfigSource.DEFAULT_CONFIG) for n in group
            if BROKER_KEYS[n].default is not None]
    while out and out[0][0] != key:
        out.pop(0)
    return out


def _broker_entries(ctx: RequestContext, mod, name: str, keys, synonyms: bool, docs: bool):
    broker = _broker_of(ctx, name)
    config = ctx.broker.config
    if broker is None:  # the cluster default: only what is set there
        shown = sorted(config.dynamic_default)
    else:
        shown = [k for k in sorted(BROKER_KEYS) if not BROKER_KEYS[k].internal
                 or k in config.values]
    out = []
    for key in shown if not keys else keys:
        ck = BROKER_KEYS.get(key)
        if ck is None or key not in shown:
            continue
        if broker is None:
            value, src = render(config.dynamic_default[key]), \
                ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        else:
            value, src = render(config.get(key)), config.source(key)
        if key in ("node.id", "broker.id"):
            value = str(ctx.broker.broker_id)
        syn = _broker_synonyms(config, key, broker is not None) if synonyms else ()
        sensitive = ck.type == ConfigType.PASSWORD
        out.append(make(mod.DescribeConfigsResourceResult, name=key,
                        value=None if sensitive else value,
                        read_only=key not in DYNAMIC_KEYS, config_source=int(src),
                        is_default=src == ConfigSource.DEFAULT_CONFIG, is_sensitive=sensitive,
                        synonyms=tuple(make(mod.DescribeConfigsSynonym, name=n, value=v,
                                            source=int(s)) for n, v, s in syn),
                        config_type=int(ck.type),
                        documentation=(ck.doc or None) if docs else None))
    return tuple(out)


@register(32, "describe_configs", 1, 4)
async def describe_configs(ctx: RequestContext, request):
    mod = response_module(32, ctx.version)
    synonyms = getattr(request, "include_synonyms", False)
    docs = getattr(request, "include_documentation", False)
    results = []
    for r in request.resources:
        error, message, configs = ErrorCode.none, None, ()
        try:
            keys = list(r.configuration_keys) if r.configuration_keys else None
            _check_resource(ctx, r, Op.DESCRIBE_CONFIGS)
            if r.resource_type == TOPIC:
                configs = _topic_entries(ctx, mod, r.resource_name, keys, synonyms, docs)
            elif r.resource_type == BROKER:
                configs = _broker_entries(ctx, mod, r.resource_name, keys, synonyms, docs)
            elif r.resource_type == BROKER_LOGGER:
                configs = broker_loggers.describe(ctx.broker.broker_id, mod, r.resource_name,
                                                  keys)
            else:
                raise KafkaError(f"Unsupported resource type {r.resource_type}",
                                 ErrorCode.invalid_request)
        except (KafkaError, StoreError) as exc:
            e = request_error(exc)
            error, message = e.code, e.message
        results.append(make(mod.DescribeConfigsResult, error_code=error, error_message=message,
                            resource_type=r.resource_type, resource_name=r.resource_name,
                            configs=configs))
    return make(response_schema(32, ctx.version), results=tuple(results))


def _check_resource(ctx: RequestContext, r, op: AclOperation) -> None:
    """A topic's configs need `op` on the topic; a broker's and its loggers' on the
    cluster (as KafkaApis)."""
    if r.resource_type == TOPIC:
        check(ctx, op, Res.TOPIC, r.resource_name)
    elif r.resource_type in (BROKER, BROKER_LOGGER):
        check(ctx, op, Res.CLUSTER)


async def _alter_topic(ctx: RequestContext, name: str, new: dict[str, str],
                       validate_only: bool) -> None:
    if ctx.broker.cache.topic(name) is None:
        raise KafkaError(f"Topic {name} does not exist", ErrorCode.unknown_topic_or_partition)
    try:
        validate_topic_configs(new)
    except ConfigError as e:
        raise KafkaError(str(e), ErrorCode.invalid_config) from None
    if not validate_only:
        await ctx.broker.controller.alter_topic_configs(name, new)


async def _alter_broker(ctx: RequestContext, r, incremental: bool,
                        validate_only: bool) -> None:
    """A broker resource's new dynamic configs: AlterConfigs replaces them,
    IncrementalAlterConfigs edits them; all validated before any is written."""
    broker = _broker_of(ctx, r.resource_name)
    dynamic = ctx.broker.dynamic_configs
    if dynamic is None:
        raise KafkaError("Dynamic broker configs are not available", ErrorCode.invalid_request)
    if incremental:
        config = ctx.broker.config
        new = _apply_operations(
            await dynamic.read(broker), r.configs, BROKER_KEYS, "broker",
            lambda key: render(config.dynamic_default[key] if broker is None and key in
                               config.dynamic_default else config.get(key)))
    else:
        new = {c.name: c.value for c in r.configs if c.value is not None}
    new = {k: v for k, v in new.items() if v is not None}
    try:
        validate_broker_configs(broker, new)
    except ConfigError as e:
        raise KafkaError(str(e), ErrorCode.invalid_config) from None
    if not validate_only:
        await dynamic.write(broker, new)


@register(33, "alter_configs", 0, 2)
async def alter_configs(ctx: RequestContext, request):
    return await _alter_each(ctx, request, 33, lambda r: {c.name: c.value for c in r.configs})


@register(44, "incremental_alter_configs", 0, 1)
async def incremental_alter_configs(ctx: RequestContext, request):
    def topic_overrides(r) -> dict[str, str]:
        info = ctx.broker.cache.topic(r.resource_name)
        return _apply_operations(dict(info.configs) if info else {}, r.configs, TOPIC_KEYS,
                                 "topic",
                                 lambda key: render(TopicConfig.of(ctx.broker.config).get(key)))
    return await _alter_each(ctx, request, 44, topic_overrides)


async def _alter_each(ctx: RequestContext, request, api_key: int, new_overrides) -> object:
    """AlterConfigs and IncrementalAlterConfigs alike: per resource, a topic's new
    overrides are `new_overrides(resource)`, validated and written unless validate_only;
    a broker's are its dynamic configs (_alter_broker); a KafkaError is that resource's
    error code and message."""
    mod = response_module(api_key, ctx.version)
    results = []
    for r in request.resources:
        error, message = ErrorCode.none, None
        try:
            _check_resource(ctx, r, Op.ALTER_CONFIGS)
            if r.resource_type == TOPIC:
                await _alter_topic(ctx, r.resource_name, new_overrides(r),
                                   request.validate_only)
            elif r.resource_type == BROKER:
                await _alter_broker(ctx, r, api_key == 44, request.validate_only)
            elif r.resource_type == BROKER_LOGGER and api_key == 44:
                broker_loggers.alter(ctx.broker.broker_id, r.resource_name, r.configs,
                                     request.validate_only)
            elif r.resource_type == BROKER_LOGGER:
                raise KafkaError("AlterConfigs is deprecated and does not support the "
                                 "resource type BROKER_LOGGER", ErrorCode.invalid_request)
            else:
                raise KafkaError(f"Unsupported resource type {r.resource_type}",
                                 ErrorCode.invalid_request)
        except (KafkaError, StoreError) as exc:
            e = request_error(exc)
            error, message = e.code, e.message
        results.append(make(mod.AlterConfigsResourceResponse, error_code=error,
                            error_message=message, resource_type=r.resource_type,
                            resource_name=r.resource_name))
    await refresh_after_write(ctx, {r.resource_name for r in request.resources
                                         if r.resource_type == TOPIC})
    return make(response_schema(api_key, ctx.version), responses=tuple(results))


def _apply_operations(current: dict[str, str], configs, known: dict, kind: str,
                      default_of) -> dict[str, str]:
    """Configs after IncrementalAlterConfigs' SET/DELETE/APPEND/SUBTRACT on `current`;
    `default_of(key)` is a list key's current effective value (APPEND's base)."""
    current = dict(current)
    for c in configs:
        if c.name not in known:
            raise KafkaError(f"Unknown {kind} config name: {c.name}", ErrorCode.invalid_config)
        if c.config_operation == SET:
            current[c.name] = c.value
        elif c.config_operation == DELETE:
            current.pop(c.name, None)
        elif c.config_operation in (APPEND, SUBTRACT):
            if known[c.name].type != ConfigType.LIST:
                raise KafkaError(f"Config {c.name} is not a list", ErrorCode.invalid_config)
            base = current.get(c.name, default_of(c.name) or "")
            items = [x for x in base.split(",") if x]
            values = [x for x in (c.value or "").split(",") if x]
            if c.config_operation == APPEND:
                items += [v for v in values if v not in items]
            else:
                items = [x for x in items if x not in values]
            current[c.name] = ",".join(items)
        else:
            raise KafkaError(f"Unknown config operation {c.config_operation}",
                             ErrorCode.invalid_request)
    return current
