"""`strom log-dirs` against two brokers: each broker's log dir lists its replicas, the
follower's replica has the leader's size once it caught up (offset lag 0), --broker-list
limits the brokers asked."""

from __future__ import annotations

import json
import os

from strom.testing.cluster import wait_until
from tests.cluster.test_operations import create, produce, strom


def log_dirs(bootstrap: str, *args: str) -> tuple[list[str], dict]:
    rc, out, err = strom("log-dirs", "--bootstrap-server", bootstrap, "--describe", *args)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0] == "Querying brokers for log directories information"
    return lines[:2], json.loads(lines[2])


def sizes(answer: dict) -> dict[int, dict[str, tuple[int, int]]]:
    """{broker: {partition: (size, offset lag)}} over its log dirs."""
    return {b["broker"]: {p["partition"]: (p["size"], p["offsetLag"])
                          for d in b["logDirs"] for p in d["partitions"]}
            for b in answer["brokers"]}


def test_log_dirs_tool_on_two_brokers(make_cluster):
    cluster = make_cluster(2)
    topic = "sized"
    create(cluster, topic, [[1, 2], [2, 1]])
    produce(cluster.bootstrap, topic, 200, partition=0)

    def replicas_agree():
        _, answer = log_dirs(cluster.bootstrap, "--topic-list", topic)
        s = sizes(answer)
        return s if s[1][f"{topic}-0"] == s[2][f"{topic}-0"] else None

    s = wait_until(replicas_agree, 15, what="the follower's replica has the leader's size")
    assert s[1][f"{topic}-0"][0] > 200 and s[1][f"{topic}-0"][1] == 0
    assert s[1][f"{topic}-1"] == s[2][f"{topic}-1"] == (0, 0)
    status, answer = log_dirs(cluster.bootstrap, "--topic-list", topic)
    assert status[1] == "Received log directory information from brokers 1,2"
    assert [b["broker"] for b in answer["brokers"]] == [1, 2]
    for b in answer["brokers"]:
        assert [d["logDir"] for d in b["logDirs"]] == \
            [os.path.abspath(cluster.brokers[b["broker"]].log_dir)]

    status, answer = log_dirs(cluster.bootstrap, "--broker-list", "2", "--topic-list", topic)
    assert status[1] == "Received log directory information from brokers 2"
    assert sizes(answer) == {2: s[2]}
