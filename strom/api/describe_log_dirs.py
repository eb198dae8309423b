"""DescribeLogDirs (key 35), versions 1-4.

Behaviour: one result per configured log dir (its absolute path), each listing the topics
and partitions whose logs it holds: size (the bytes of all segments), offset lag (as
Kafka's: max(high watermark - log end offset, 0) for a hosted partition, so 0 for a leader
or a caught-up follower; -1 when the log exists but the partition is not hosted) and
is_future (always false: strom has no AlterReplicaLogDirs, so no future logs). Null topics
means every partition; otherwise only the partitions named (an unknown topic or partition
simply does not appear, and a dir with none of them has an empty topic list, as Kafka's).
A dir whose volume cannot be read answers KAFKA_STORAGE_ERROR. No authorizer: the
top-level error is NONE.
Version notes: v3+ top-level error code, v4+ total/usable bytes of the dir's volume
(v0, deprecated in Kafka and removed from its 4.x clients, is not parsed by kio).
With an authorizer: without DESCRIBE on the cluster, no log dirs and (v3+)
CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import logging
import os

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 35
INVALID_OFFSET_LAG = -1

log = logging.getLogger(__name__)


@register(API_KEY, "describe_log_dirs", 1, 4)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    if not allowed(ctx, Op.DESCRIBE, Res.CLUSTER):  # v3+ says so; before, nothing
        return make(cls, error_code=ErrorCode.cluster_authorization_failed, results=())
    logs = ctx.broker.logs
    hosted = ctx.broker.replicas.partitions
    wanted = None
    if request.topics is not None:
        wanted = {(t.topic, p) for t in request.topics for p in t.partitions}
    by_dir: dict[str, dict[str, list]] = {d: {} for d in logs.log_dirs}
    for (topic, index), plog in sorted(logs.logs.items()):
        if wanted is not None and (topic, index) not in wanted:
            continue
        d = logs.dir_of(topic, index)
        if d not in by_dir:
            continue
        partition = hosted.get((topic, index))
        lag = INVALID_OFFSET_LAG if partition is None else \
            max(partition.log.high_watermark - plog.log_end_offset, 0)
        by_dir[d].setdefault(topic, []).append(make(
            mod.DescribeLogDirsPartition, partition_index=index,
            partition_size=plog.size_in_bytes, offset_lag=lag, is_future_key=False))
    results = []
    for d, topics in by_dir.items():
        try:
            if d in logs.offline_dirs:  # KIP-112: failed, until the broker restarts
                raise OSError("the log dir is offline")
            st = os.statvfs(d)
        except OSError as e:
            log.warning("Unable to describe log dir %s: %s", d, e)
            results.append(make(mod.DescribeLogDirsResult,
                                error_code=ErrorCode.kafka_storage_error, log_dir=d, topics=()))
            continue
        results.append(make(
            mod.DescribeLogDirsResult, error_code=ErrorCode.none, log_dir=d,
            topics=tuple(make(mod.DescribeLogDirsTopic, name=t, partitions=tuple(ps))
                         for t, ps in topics.items()),
            total_bytes=st.f_blocks * st.f_frsize, usable_bytes=st.f_bavail * st.f_frsize))
    return make(cls, error_code=ErrorCode.none, results=tuple(results))
