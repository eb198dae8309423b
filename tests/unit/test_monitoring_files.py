"""The files in monitoring/: strom's Grafana dashboard is a valid current-Grafana dashboard
(schema fields, unique panel ids, a layout on the 24-column grid, every target a PromQL
expression on the templated Prometheus data source), the scrape config and alert rules pass
promtool, and every metric they name is one the brokers serve. That each query parses and
answers in a real Prometheus is tests/cluster/test_monitoring.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from strom.testing.prometheus import MONITORING

DASHBOARD = MONITORING / "grafana" / "strom-dashboard.json"
# every metric name strom's collectors and prometheus_client's process collector emit
SERVED = re.compile(r"(kafka_[a-z_]+|strom_[a-z_]+|process_[a-z_]+|python_[a-z_]+|up)")


def test_grafana_dashboard_is_valid():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["type"] in ("stat", "timeseries"), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for needed in ("brokers online", "by topic", "latency", "isr shrinks", "under-replicated",
                   "lag", "idle"):
        assert needed in titles, needed


def _metric_names(expr: str) -> set[str]:
    """The metric names of the selectors in `expr` (every query here uses `name{...}`)."""
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))


@pytest.mark.parametrize("source", ["dashboard", "alerts", "queries"])
def test_every_query_names_served_metrics(source):
    if source == "dashboard":
        d = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    elif source == "alerts":
        rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
        exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    else:
        exprs = [q["expr"] for q in
                 yaml.safe_load((MONITORING / "dashboard-queries.yml").read_text())["queries"]]
    assert exprs
    for expr in exprs:
        names = _metric_names(expr)
        assert names, expr
        for name in names:
            assert SERVED.fullmatch(name), (name, expr)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_scrape_config_and_rules():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        out = subprocess.run(["promtool", *args], cwd=MONITORING, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
