"""CreateTopics (key 19), versions 2-7.

Behaviour: validates each topic (name rules and collisions, partitions, replication factor
against live brokers, explicit replica assignments, configs: unknown names and bad values
are INVALID_CONFIG) and, unless validate_only, creates it through the controller. A name
with both '.' and '_' succeeds with a warning in error_message. Duplicate names in one
request are INVALID_REQUEST for each.
Version notes: v5+ returns partitions, replication factor and configs; v7 the topic id.
With an authorizer: TOPIC_AUTHORIZATION_FAILED without CREATE on the cluster or the topic.
Quota: the partitions of each valid topic count against controller_mutation_rate (v6+:
THROTTLING_QUOTA_EXCEEDED for a topic while it is exceeded; older: throttled only).
"""

from __future__ import annotations

from collections import Counter

from strom.api.answers import refresh_after_write, request_error
from strom.api.authorization import Op, Res, allowed, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.api.throttling import ControllerMutationQuota
from strom.cluster.controller import NewTopic
from strom.cluster.store import StoreError
from strom.config import TOPIC_KEYS, TopicConfig, render
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 19


def config_entities(ctx: RequestContext, cls, overrides: dict[str, str]):
    config = TopicConfig.of(ctx.broker.config, overrides)
    return tuple(make(cls, name=name, value=render(config.get(name)), read_only=False,
                      config_source=int(config.source(name)), is_sensitive=False)
                 for name in sorted(TOPIC_KEYS))


@register(API_KEY, "create_topics", 2, 7)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    counts = Counter(t.name for t in request.topics)
    quota = ControllerMutationQuota(ctx, strict_since=6)
    results = []
    for t in request.topics:
        fields = dict(name=t.name, topic_id=None, error_code=ErrorCode.none, error_message=None,
                      num_partitions=-1, replication_factor=-1, configs=None)
        try:
            if counts[t.name] > 1:
                raise KafkaError(f"Create topics request from client contains multiple entries "
                                 f"for topic {t.name}", ErrorCode.invalid_request)
            if not allowed(ctx, Op.CREATE, Res.CLUSTER):
                check(ctx, Op.CREATE, Res.TOPIC, t.name)
            assignment = {a.partition_index: tuple(a.broker_ids) for a in t.assignments}
            configs = {c.name: c.value for c in t.configs}
            new = NewTopic(t.name, t.num_partitions, t.replication_factor, assignment or None,
                           configs)
            if quota.enabled and not request.validate_only:
                checked = await ctx.broker.controller.create_topic(new, validate_only=True)
                quota.record(checked.num_partitions)
            created = await ctx.broker.controller.create_topic(
                new, validate_only=request.validate_only)
            fields.update(topic_id=created.topic_id, num_partitions=created.num_partitions,
                          replication_factor=created.replication_factor,
                          error_message=created.warning,
                          configs=config_entities(ctx, mod.CreatableTopicConfigs,
                                                  created.configs)
                          if hasattr(mod, "CreatableTopicConfigs") else None)
        except (KafkaError, StoreError) as exc:
            e = request_error(exc)
            fields.update(error_code=e.code, error_message=e.message)
        results.append(make(mod.CreatableTopicResult, **fields))
    if not request.validate_only:
        await refresh_after_write(ctx, {t.name for t in request.topics})
    return make(response_schema(API_KEY, ctx.version), topics=tuple(results))
