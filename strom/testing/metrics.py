"""Reading a broker's metrics endpoint as Prometheus would: `scrape` parses /metrics with
prometheus_client's own parser into {(name, labels): value}; `http_get` fetches any path
and returns the status too (404s included)."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"

Series = dict[tuple[str, frozenset], float]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port: int) -> Series:
    status, text = http_get(port, "/metrics")
    assert status == 200, (status, text[:200])
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(series: Series, name: str, **labels: str) -> float | None:
    """The value of the series with exactly these labels, or None."""
    return series.get((name, frozenset(labels.items())))


def matching(series: Series, name: str, **labels: str) -> dict[frozenset, float]:
    """Every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in series.items() if n == name and want <= lab}
