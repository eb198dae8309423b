"""strom reassign-partitions --verify --wait against a stand-in cluster: the status it prints
once the moves are done."""

from __future__ import annotations

import json
import types

from strom.cli import reassign_partitions


class Cluster:
    """No move listed any more; Metadata shows the in-flight replica set `lag` times first
    (the answering broker not caught up yet), then the target."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.metadata_reads = 0

    def list_reassignments(self, partitions=None):
        return {}

    def replicas(self, topics):
        self.metadata_reads += 1
        replicas = [3, 2, 1] if self.metadata_reads <= self.lag else [3, 2]
        return {t: {0: replicas} for t in topics}


def verify(tmp_path, cluster, wait: bool) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "moved", "partition": 0, "replicas": [3, 2]}]}))
    args = types.SimpleNamespace(reassignment_json_file=str(plan), wait=wait, verify=True,
                                 wait_timeout_ms=0)
    assert reassign_partitions._verify(cluster, args) == 0


def test_with_wait_a_finished_move_is_reported_once_metadata_shows_it(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(reassign_partitions, "WAIT_POLL_S", 0.01)
    cluster = Cluster(lag=3)
    verify(tmp_path, cluster, wait=True)
    assert capsys.readouterr().out == ("Status of partition reassignment:\n"
                                       "Reassignment of partition moved-0 is completed.\n")
    assert cluster.metadata_reads == 4


def test_with_wait_metadata_that_never_matches_is_reported_after_the_grace(tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.setattr(reassign_partitions, "WAIT_POLL_S", 0.01)
    monkeypatch.setattr(reassign_partitions, "METADATA_GRACE_S", 0.1)
    verify(tmp_path, Cluster(lag=10**9), wait=True)
    assert capsys.readouterr().out.endswith(
        "There is no active reassignment of partition moved-0, but replica set is 3,2,1 "
        "rather than 3,2.\n")


def test_without_wait_the_status_is_read_once(tmp_path, capsys):
    cluster = Cluster(lag=3)
    verify(tmp_path, cluster, wait=False)
    assert "replica set is 3,2,1 rather than 3,2" in capsys.readouterr().out
    assert cluster.metadata_reads == 1
