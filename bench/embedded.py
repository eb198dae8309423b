"""How fast the embedded broker is ready, and what the pytest plugin costs a test suite.

    python bench/embedded.py              # 5 cold starts, 10 warm starts, 50-test suites
    python bench/embedded.py --quick      # 2 cold, 3 warm, 10-test suites

Measures, all on 127.0.0.1 with a fresh temp log dir each time:

- cold start: a new interpreter imports strom.testing.embedded and starts an
  EmbeddedBroker (thread mode) until a client's Metadata request is answered; the figure
  excludes the interpreter's own start-up, which every test run pays anyway. Its CPU time
  is printed too: on a shared machine the wall time mostly measures the other load;
- warm start: start() to Metadata answered in a process that has started one before
  (modules imported), thread and process mode;
- a pytest session of N tests, each producing one record to a fresh `kafka_topic` on the
  session's broker, against the same N tests each with a broker of its own (the `strom`
  marker with a config), both through the plugin.

The target is a usable single broker in well under a second, cold.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COLD = textwrap.dedent("""
    import time
    cpu = time.process_time()
    began = time.monotonic()
    from strom.testing.embedded import EmbeddedBroker
    imported = time.monotonic()
    broker = EmbeddedBroker().start()
    started = time.monotonic()
    from confluent_kafka.admin import AdminClient
    AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    ready = time.monotonic()
    cpu = time.process_time() - cpu
    broker.close()
    print(imported - began, started - began, ready - began, cpu)
""")

SUITE = textwrap.dedent("""
    import pytest
    from confluent_kafka import Producer

    MARK = {mark}

    @pytest.mark.parametrize("i", range({count}))
    def test_one(i, kafka_bootstrap, kafka_topic):
        producer = Producer({{"bootstrap.servers": kafka_bootstrap}})
        producer.produce(kafka_topic, b"x")
        assert producer.flush(30) == 0

    if MARK:
        test_one = pytest.mark.strom(config={{}})(test_one)
""")


def cold_starts(count: int) -> list[tuple[float, float, float]]:
    out = []
    for _ in range(count):
        result = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True,
                                timeout=120, cwd=ROOT, check=True)
        out.append(tuple(float(x) for x in result.stdout.split()))
    return out


def warm_starts(count: int, mode: str) -> list[float]:
    from confluent_kafka.admin import AdminClient

    from strom.testing.embedded import EmbeddedBroker

    EmbeddedBroker(mode=mode).start().close()  # imports and first-run costs
    times = []
    for _ in range(count):
        began = time.monotonic()
        broker = EmbeddedBroker(mode=mode).start()
        AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        times.append(time.monotonic() - began)
        broker.close()
    return times


def suite_seconds(count: int, per_test_broker: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="strom-bench-suite-") as tmp:
        Path(tmp, "test_suite.py").write_text(SUITE.format(count=count,
                                                           mark=per_test_broker))
        began = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                                 "strom.testing.pytest_plugin", "-p", "no:cacheprovider",
                                 "test_suite.py"], capture_output=True, text=True,
                                timeout=600, cwd=tmp)
        took = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"the suite failed:\n{result.stdout[-3000:]}")
    return took


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:7.1f} ms   "
            f"max {max(values) * 1000:7.1f} ms   (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, a 10-test suite")
    args = parser.parse_args()
    cold_n, warm_n, tests = (2, 3, 10) if args.quick else (5, 10, 50)

    cold = cold_starts(cold_n)
    print(f"cold import of strom.testing.embedded   {summary([c[0] for c in cold])}")
    print(f"cold import + start (listening)         {summary([c[1] for c in cold])}")
    print(f"cold import + start + Metadata answered {summary([c[2] for c in cold])}")
    print(f"  the same in CPU time of the process   {summary([c[3] for c in cold])}")
    print(f"warm start, thread mode (to Metadata)   {summary(warm_starts(warm_n, 'thread'))}")
    print(f"warm start, process mode (to Metadata)  {summary(warm_starts(warm_n, 'process'))}")
    shared = suite_seconds(tests, per_test_broker=False)
    own = suite_seconds(tests, per_test_broker=True)
    print(f"pytest, {tests} tests, one session broker + fresh topics: {shared:6.2f} s")
    print(f"pytest, {tests} tests, a broker per test:                 {own:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
