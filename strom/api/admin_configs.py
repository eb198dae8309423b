"""DescribeConfigs (32, v1-4), AlterConfigs (33, v0-2), IncrementalAlterConfigs (44, v0-1).

Behaviour: topic resources (type 2) show every topic config with its effective value and
source (DYNAMIC_TOPIC_CONFIG for an override, STATIC_BROKER_CONFIG when a broker synonym was
set in server.properties, DEFAULT_CONFIG otherwise), and, when asked, its synonyms in
precedence order. Broker resources (type 4, named by this broker's id or "") show the
broker's static configuration, read-only. Topic configs can be changed: AlterConfigs
replaces a topic's overrides, IncrementalAlterConfigs applies SET/DELETE/APPEND/SUBTRACT;
both validate (INVALID_CONFIG) and honour validate_only. Dynamic broker configs are not
supported (INVALID_REQUEST with a message).
"""

from __future__ import annotations

from strom.api.context import RequestContext
from strom.api.registry import register
from strom.config import (
    BROKER_KEYS,
    TOPIC_KEYS,
    ConfigError,
    ConfigSource,
    ConfigType,
    TopicConfig,
    render,
    validate_topic_configs,
)
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

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


def _broker_entries(ctx: RequestContext, mod, name: str, keys, synonyms: bool, docs: bool):
    if name not in ("", str(ctx.broker.broker_id)):
        raise KafkaError(f"Unexpected broker id, expected {ctx.broker.broker_id} but "
                         f"received {name}", ErrorCode.invalid_request)
    config = ctx.broker.config
    out = []
    for key in sorted(BROKER_KEYS) if not keys else keys:
        ck = BROKER_KEYS.get(key)
        if ck is None or (ck.internal and key not in config.values):
            continue
        value = render(config.get(key))
        if key in ("node.id", "broker.id"):
            value = str(ctx.broker.broker_id)
        src = config.source(key)
        syn = ((key, value, src),) if synonyms else ()
        out.append(make(mod.DescribeConfigsResourceResult, name=key, value=value,
                        read_only=True, config_source=int(src),
                        is_default=src == ConfigSource.DEFAULT_CONFIG, is_sensitive=
                        ck.type == ConfigType.PASSWORD,
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
            if r.resource_type == TOPIC:
                configs = _topic_entries(ctx, mod, r.resource_name, keys, synonyms, docs)
            elif r.resource_type == BROKER:
                configs = _broker_entries(ctx, mod, r.resource_name, keys, synonyms, docs)
            elif r.resource_type == BROKER_LOGGER:
                configs = ()
            else:
                raise KafkaError(f"Unsupported resource type {r.resource_type}",
                                 ErrorCode.invalid_request)
        except KafkaError as e:
            error, message = e.code, e.message
        results.append(make(mod.DescribeConfigsResult, error_code=error, error_message=message,
                            resource_type=r.resource_type, resource_name=r.resource_name,
                            configs=configs))
    return make(response_schema(32, ctx.version), results=tuple(results))


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


def _not_broker(resource_type: int) -> None:
    if resource_type in (BROKER, BROKER_LOGGER):
        raise KafkaError("Dynamic broker configs are not supported by strom; set them in "
                         "server.properties", ErrorCode.invalid_request)
    if resource_type != TOPIC:
        raise KafkaError(f"Unsupported resource type {resource_type}",
                         ErrorCode.invalid_request)


@register(33, "alter_configs", 0, 2)
async def alter_configs(ctx: RequestContext, request):
    return await _alter_each(ctx, request, 33, lambda r: {c.name: c.value for c in r.configs})


@register(44, "incremental_alter_configs", 0, 1)
async def incremental_alter_configs(ctx: RequestContext, request):
    return await _alter_each(ctx, request, 44, lambda r: _apply_operations(ctx, r))


async def _alter_each(ctx: RequestContext, request, api_key: int, new_overrides) -> object:
    """AlterConfigs and IncrementalAlterConfigs alike: per resource (a topic), its new
    overrides are `new_overrides(resource)`, validated and written unless validate_only; a
    KafkaError is that resource's error code and message."""
    mod = response_module(api_key, ctx.version)
    results = []
    for r in request.resources:
        error, message = ErrorCode.none, None
        try:
            _not_broker(r.resource_type)
            await _alter_topic(ctx, r.resource_name, new_overrides(r), request.validate_only)
        except KafkaError as e:
            error, message = e.code, e.message
        results.append(make(mod.AlterConfigsResourceResponse, error_code=error,
                            error_message=message, resource_type=r.resource_type,
                            resource_name=r.resource_name))
    await ctx.broker.cache.refresh_now({r.resource_name for r in request.resources
                                         if r.resource_type == TOPIC})
    return make(response_schema(api_key, ctx.version), responses=tuple(results))


def _apply_operations(ctx: RequestContext, r) -> dict[str, str]:
    """A topic's overrides after IncrementalAlterConfigs' SET/DELETE/APPEND/SUBTRACT."""
    info = ctx.broker.cache.topic(r.resource_name)
    current = dict(info.configs) if info else {}
    for c in r.configs:
        if c.name not in TOPIC_KEYS:
            raise KafkaError(f"Unknown topic config name: {c.name}", ErrorCode.invalid_config)
        if c.config_operation == SET:
            current[c.name] = c.value
        elif c.config_operation == DELETE:
            current.pop(c.name, None)
        elif c.config_operation in (APPEND, SUBTRACT):
            if TOPIC_KEYS[c.name].type != ConfigType.LIST:
                raise KafkaError(f"Config {c.name} is not a list", ErrorCode.invalid_config)
            base = current.get(c.name,
                               render(TopicConfig.of(ctx.broker.config).get(c.name)) or "")
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
