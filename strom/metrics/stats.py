"""Counters and latency histograms updated on the hot path, read at scrape time.

Nothing here touches prometheus_client: a produced batch costs a few integer additions on
a `TopicStats` object the partition already holds (no label lookup, no lock: everything
runs on the broker's event loop), a request one dict lookup by (api key, version) and one
bucket increment. The collectors (collectors.py) turn these into metric families only
when Prometheus scrapes.

The broker-wide series (Kafka's "all topics" BrokerTopicMetrics) are the sum of the live
topics, the requests no topic could be charged with (`unattributed`), and the totals of
topics already deleted (`retired`), so a counter never goes backwards when a topic goes.

Owned by the event loop.
"""

from __future__ import annotations

import bisect

# upper bounds (ms) of the latency buckets; Prometheus' histogram gets them in seconds
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
                      5000, 10000, 30000)
QUANTILES = (0.5, 0.75, 0.95, 0.98, 0.99, 0.999)  # the ones Kafka's Yammer histograms show
QUANTILE_WINDOW_S = 60.0  # quantiles describe roughly the last one to two windows


class TopicStats:
    """Kafka's BrokerTopicMetrics for one topic (or for the unattributed requests)."""

    __slots__ = ("messages_in", "bytes_in", "bytes_out", "produce_requests",
                 "failed_produce_requests", "fetch_requests", "failed_fetch_requests")

    FIELDS = __slots__

    def __init__(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, 0)

    def add_to(self, other: TopicStats) -> None:
        for name in self.FIELDS:
            setattr(other, name, getattr(other, name) + getattr(self, name))


class BrokerTopicStats:
    """Per-topic stats of the topics this broker hosts, and the broker-wide totals."""

    def __init__(self) -> None:
        # False when nothing reads them (no metrics.listener): the hot path skips counting
        self.enabled = True
        self.topics: dict[str, TopicStats] = {}
        self.unattributed = TopicStats()  # unknown topics, requests before a partition
        self.retired = TopicStats()  # topics deleted since start-up

    def topic(self, name: str) -> TopicStats:
        stats = self.topics.get(name)
        if stats is None:
            stats = self.topics[name] = TopicStats()
        return stats

    def remove(self, name: str) -> None:
        """The topic is gone: its series go, its counts stay in the broker-wide totals."""
        stats = self.topics.pop(name, None)
        if stats is not None:
            stats.add_to(self.retired)

    def totals(self) -> TopicStats:
        total = TopicStats()
        self.unattributed.add_to(total)
        self.retired.add_to(total)
        for stats in self.topics.values():
            stats.add_to(total)
        return total


class Latency:
    """A cumulative histogram of durations in ms (Prometheus' histogram), and a recent
    window of the same buckets from which the quantiles Kafka reports are estimated."""

    __slots__ = ("counts", "sum_ms", "_window_start", "_previous")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.sum_ms = 0.0
        self._window_start: tuple[float, list[int]] | None = None
        self._previous: list[int] | None = None

    def record(self, ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.sum_ms += ms

    @property
    def count(self) -> int:
        return sum(self.counts)

    @classmethod
    def merged(cls, *parts: Latency) -> Latency:
        """One histogram of several (Fetch = FetchConsumer + FetchFollower), for a scrape;
        its quantile window is its own, so it starts at the first scrape."""
        out = cls()
        out.counts = [sum(c) for c in zip(*(p.counts for p in parts), strict=True)]
        out.sum_ms = sum(p.sum_ms for p in parts)
        return out

    def quantiles(self, now: float) -> list[tuple[float, float]]:
        """(quantile, upper estimate in ms) over the samples since the window before the
        current one started; NaN when there were none (as an idle Yammer histogram)."""
        if self._window_start is None:
            self._window_start = (now, list(self.counts))
            base = [0] * len(self.counts)
        else:
            started, snapshot = self._window_start
            if now - started >= QUANTILE_WINDOW_S:
                self._previous = snapshot
                self._window_start = (now, list(self.counts))
            base = self._previous or [0] * len(self.counts)
        recent = [c - b for c, b in zip(self.counts, base, strict=True)]
        total = sum(recent)
        out = []
        for q in QUANTILES:
            out.append((q, _bucket_bound(recent, total, q)))
        return out


def _bucket_bound(counts: list[int], total: int, q: float) -> float:
    if not total:
        return float("nan")
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if c and seen >= rank:
            return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return float("inf")


class ApiStats:
    """One API's figures: requests by version (a list indexed by version: no dict lookup
    per request) and its total time."""

    __slots__ = ("name", "versions", "latency")

    def __init__(self, name: str, max_version: int) -> None:
        self.name = name
        self.versions = [0] * (max_version + 1)
        self.latency = Latency()


class RequestStats:
    """Kafka's RequestMetrics: requests by API and version, and their total time by request
    name. A Fetch is timed once, as FetchConsumer or FetchFollower; Kafka's third name for
    it, Fetch, is their sum (made at scrape time)."""

    def __init__(self) -> None:
        self.apis: dict[int, ApiStats] = {}
        self.fetch_consumer = Latency()
        self.fetch_follower = Latency()
        self._fetch_window: Latency | None = None  # the merged Fetch's quantile window

    def api(self, api_key: int, name: str, max_version: int) -> ApiStats:
        """The stats of one API, made once (the dispatcher keeps them per handler)."""
        stats = self.apis.get(api_key)
        if stats is None:
            stats = self.apis[api_key] = ApiStats(name, max_version)
        return stats

    @property
    def requests(self) -> dict[tuple[str, int], int]:
        return {(a.name, v): n for a in self.apis.values() for v, n in enumerate(a.versions)
                if n}

    @property
    def latency(self) -> dict[str, Latency]:
        out = {a.name: a.latency for a in self.apis.values() if a.latency.count}
        for name, lat in (("FetchConsumer", self.fetch_consumer),
                          ("FetchFollower", self.fetch_follower)):
            if lat.count:
                out[name] = lat
        if "FetchConsumer" in out or "FetchFollower" in out:
            fetch = Latency.merged(self.fetch_consumer, self.fetch_follower)
            if self._fetch_window is not None:  # keep the window of the quantiles
                fetch._window_start = self._fetch_window._window_start
                fetch._previous = self._fetch_window._previous
            self._fetch_window = fetch
            out["Fetch"] = fetch
        return out
