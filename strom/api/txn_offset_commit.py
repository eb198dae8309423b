"""TxnOffsetCommit (key 28), versions 0-5.

Behaviour: offsets a transactional producer commits for a group
(GroupCoordinator.txn_commit_offsets): written to the group's partition of
`__consumer_offsets` as the producer's transactional batch, visible to OffsetFetch only
once the transaction commits. With partition verification on (KIP-890) the coordinator
first checks that AddOffsetsToTxn put that partition in the transaction
(INVALID_TXN_STATE otherwise); from v5 (Transactions V2, KIP-890 part 2) the partition is
added to the transaction instead, so no AddOffsetsToTxn is needed. Errors as OffsetCommit (UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, FENCED_INSTANCE_ID for a member's commit; per partition
OFFSET_METADATA_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION), plus INVALID_PRODUCER_EPOCH.
With an authorizer: WRITE on the transactional id, READ on the group and on each topic
(TRANSACTIONAL_ID_, GROUP_, TOPIC_AUTHORIZATION_FAILED).
Version notes: v3+ generation_id, member_id, group_instance_id (KIP-447).
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.offset_commit import answer, requested
from strom.api.registry import register
from strom.coordinator.group_coordinator import OFFSETS_TOPIC
from strom.protocol.errors import ErrorCode, KafkaError

API_KEY = 28
TXN_V2_VERSION = 5  # Transactions V2: the group's partition joins the transaction here


async def _verify(ctx: RequestContext, request) -> int:
    verifier = ctx.broker.replicas.txn_verifier
    add = ctx.version >= TXN_V2_VERSION
    if verifier is None or not (add or ctx.broker.replicas.txn_verification):
        return ErrorCode.none
    partition = ctx.broker.groups.partition_for(request.group_id)
    return await verifier(request.transactional_id, request.producer_id,
                          request.producer_epoch, OFFSETS_TOPIC, partition,
                          add)


@register(API_KEY, "txn_offset_commit", 0, 5)
async def handle(ctx: RequestContext, request):
    wanted = requested(request)
    denied: list = []
    if not allowed(ctx, Op.WRITE, Res.TRANSACTIONAL_ID, request.transactional_id):
        return answer(API_KEY, ctx.version, [
            (o.topic, o.partition, ErrorCode.transactional_id_authorization_failed)
            for o in wanted], "TxnOffsetCommitResponse")
    if not allowed(ctx, Op.READ, Res.GROUP, request.group_id):
        return answer(API_KEY, ctx.version, [
            (o.topic, o.partition, ErrorCode.group_authorization_failed) for o in wanted],
            "TxnOffsetCommitResponse")
    readable = {o.topic for o in wanted if allowed(ctx, Op.READ, Res.TOPIC, o.topic)}
    denied = [(o.topic, o.partition, ErrorCode.topic_authorization_failed)
              for o in wanted if o.topic not in readable]
    wanted = [o for o in wanted if o.topic in readable]
    try:
        if not request.group_id:
            raise KafkaError(None, ErrorCode.invalid_group_id)
        ctx.broker.groups.check_coordinator(request.group_id)
        code = await _verify(ctx, request)
        if code != ErrorCode.none:
            raise KafkaError(None, ErrorCode(code))
        results = await ctx.broker.groups.txn_commit_offsets(
            request.group_id, request.producer_id, request.producer_epoch,
            getattr(request, "generation_id", -1), getattr(request, "member_id", ""),
            getattr(request, "group_instance_id", None), wanted)
    except KafkaError as e:
        results = [(o.topic, o.partition, e.code) for o in wanted]
    return answer(API_KEY, ctx.version, results + denied, "TxnOffsetCommitResponse")
