"""A real Prometheus server (Debian's `prometheus` package) scraping a test cluster with the
scrape config and alert rules shipped in `monitoring/`, queried through its HTTP API.

    with PrometheusProcess(scrape_config(ports), rules) as prom:
        prom.query('sum(kafka_server_replicamanager_underreplicatedpartitions)')

`scrape_config` rewrites only what differs on a test machine: the targets (the brokers'
metrics ports, in the order of the shipped targets) and the intervals (1 s, so a test
waits seconds, not minutes); every label and relabelling rule is the shipped one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from strom.testing.processes import (
    HOST,
    ChildProcess,
    end,
    free_port,
    keep_dir,
    remove_dir,
    track,
)

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


def scrape_config(ports: list[int], interval: str = "1s") -> dict:
    """The shipped monitoring/prometheus.yml with its i-th target in each job pointed at
    127.0.0.1:ports[i] and the scrape and evaluation intervals set to `interval`."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    for job in config["scrape_configs"]:
        targets = job["static_configs"]
        if len(targets) != len(ports):
            raise ValueError(f"{job['job_name']} has {len(targets)} targets, "
                             f"{len(ports)} ports given")
        for static, port in zip(targets, ports, strict=True):
            static["targets"] = [f"{HOST}:{port}"]
    return config


class PrometheusError(RuntimeError):
    pass


class PrometheusProcess(ChildProcess):
    what = "prometheus"
    start_error = PrometheusError

    def __init__(self, config: dict, startup_timeout: float = 30.0) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="strom-prometheus-"))
        keep_dir(self._tmp)
        for rule_file in config.get("rule_files", []):
            shutil.copy(MONITORING / rule_file, self._tmp / rule_file)
        self.config_path = self._tmp / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self._tmp / "prometheus.log"
        self.port = free_port()
        self._port_chosen = True
        self.starts = 0
        self.startup_timeout = startup_timeout

    def _start_once(self) -> None:
        binary = find_prometheus()
        if binary is None:
            raise PrometheusError("prometheus is not installed (apt-get install prometheus)")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [binary, f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self._tmp / 'data'}",
                 f"--web.listen-address={HOST}:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self._tmp)
        track(self._proc)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self._run_log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/-/ready",
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready in {self.startup_timeout} s: "
                              f"{self._run_log()[-2000:]}")

    def _run_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path>; the `data` of a successful answer, else PrometheusError
        (a query that does not parse is one)."""
        url = f"http://{HOST}:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"{}")
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """An instant query: (labels, value) for each series of the result vector."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def close(self) -> None:
        if self._proc is not None:
            end(self._proc, 15, 10)
            self._reap()
        remove_dir(self._tmp)


__all__ = ["PrometheusProcess", "find_prometheus", "scrape_config"]
