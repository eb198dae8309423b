"""ElectLeaders (key 43), versions 0-2.

Behaviour: sent to the controller (others answer NOT_CONTROLLER). election_type 0 is a
preferred election (the first replica leads if it is live and in the ISR), 1 an unclean
one for partitions without a live leader (v1+). Null topic_partitions means every
partition; the answer then leaves out the partitions that needed no election, as Kafka's
does. Per partition: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION. See cluster/leadership.py.
Version notes: v0 has no election_type (preferred) and no top-level error code.
With an authorizer: CLUSTER_AUTHORIZATION_FAILED without ALTER on the cluster.
"""

from __future__ import annotations

from strom.api.answers import refresh_after_write, request_error
from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster import leadership
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 43


@register(API_KEY, "elect_leaders", 0, 2)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    election_type = getattr(request, "election_type", leadership.PREFERRED)
    wanted = None
    if request.topic_partitions is not None:
        wanted = [(t.topic, p) for t in request.topic_partitions for p in t.partitions]
    try:
        check(ctx, Op.ALTER, Res.CLUSTER)
        results = await leadership.elect_leaders(ctx.broker.controller, election_type, wanted)
    except (KafkaError, StoreError) as exc:
        e = request_error(exc)
        by_topic_err: dict[str, list] = {}
        for name, p in wanted or []:
            by_topic_err.setdefault(name, []).append(make(
                mod.PartitionResult, partition_id=p, error_code=e.code, error_message=e.message))
        return make(cls, error_code=e.code, replica_election_results=tuple(
            make(mod.ReplicaElectionResult, topic=t, partition_result=tuple(ps))
            for t, ps in by_topic_err.items()))
    await refresh_after_write(ctx, {t for t, _ in results})
    if wanted is None:
        # as Kafka: an election over every partition reports only the partitions that
        # were elected or failed, not the many that needed no election
        results = {tp: e for tp, e in results.items()
                   if e is None or e.code != ErrorCode.election_not_needed}
    by_topic: dict[str, list] = {}
    for (name, p), e in results.items():
        by_topic.setdefault(name, []).append(make(
            mod.PartitionResult, partition_id=p,
            error_code=e.code if e else ErrorCode.none, error_message=e.message if e else None))
    return make(cls, error_code=ErrorCode.none, replica_election_results=tuple(
        make(mod.ReplicaElectionResult, topic=t, partition_result=tuple(ps))
        for t, ps in by_topic.items()))
