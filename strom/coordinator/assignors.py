"""Server-side partition assignors of the consumer group protocol (KIP-848).

An assignor maps each member to the partitions it should own (the target assignment),
from every member's subscription and each subscribed topic's partition count.

  uniform  spreads all subscribed partitions as evenly as possible over the members that
           subscribe to their topic, keeping each member's current partitions where that
           does not break the balance (sticky)
  range    per topic, sorts its subscribers by member id and gives each a contiguous range
           of partitions, the first ones one extra when they do not divide evenly

Topics are named by id (uuid.UUID) in assignments, as on the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

Assignment = dict[uuid.UUID, set[int]]


def _empty(members: Mapping[str, object]) -> dict[str, Assignment]:
    return {m: {} for m in members}


def range_assign(subscriptions: Mapping[str, set[uuid.UUID]],
                 partition_counts: Mapping[uuid.UUID, int],
                 current: Mapping[str, Assignment] | None = None) -> dict[str, Assignment]:
    result = _empty(subscriptions)
    for topic_id, count in partition_counts.items():
        members = sorted(m for m, topics in subscriptions.items() if topic_id in topics)
        if not members:
            continue
        per, extra = divmod(count, len(members))
        start = 0
        for i, m in enumerate(members):
            n = per + (1 if i < extra else 0)
            if n:
                result[m][topic_id] = set(range(start, start + n))
            start += n
    return result


def uniform_assign(subscriptions: Mapping[str, set[uuid.UUID]],
                   partition_counts: Mapping[uuid.UUID, int],
                   current: Mapping[str, Assignment] | None = None) -> dict[str, Assignment]:
    current = current or {}
    result = _empty(subscriptions)
    counts = dict.fromkeys(subscriptions, 0)
    # every partition some member subscribes to, with the members that may own it
    eligible: dict[tuple[uuid.UUID, int], list[str]] = {}
    for topic_id, n in partition_counts.items():
        members = sorted(m for m, topics in subscriptions.items() if topic_id in topics)
        if members:
            for p in range(n):
                eligible[(topic_id, p)] = members
    if not eligible:
        return result
    # the fair share when everyone subscribes to all: `floor` each, and `extra` of the
    # members one more. A member keeps its current partitions up to that share; only
    # `extra` members may keep floor + 1, or a newcomer could be left with nothing.
    floor, extra = divmod(len(eligible), max(1, len(subscriptions)))
    unassigned = []
    for tp in sorted(eligible, key=lambda x: (str(x[0]), x[1])):
        owner = next((m for m in eligible[tp]
                      if tp[1] in current.get(m, {}).get(tp[0], ())), None)
        keep = owner is not None and (counts[owner] < floor or
                                      (counts[owner] == floor and extra > 0))
        if keep:
            if counts[owner] == floor:
                extra -= 1
            result[owner].setdefault(tp[0], set()).add(tp[1])
            counts[owner] += 1
        else:
            unassigned.append(tp)
    for tp in unassigned:
        owner = min(eligible[tp], key=lambda m: (counts[m], m))
        result[owner].setdefault(tp[0], set()).add(tp[1])
        counts[owner] += 1
    return result


ASSIGNORS = {"uniform": uniform_assign, "range": range_assign}
DEFAULT_ASSIGNOR = "uniform"
