"""pytest fixtures backed by a real strom broker (`pip install strom[pytest]`).

Registered through the `pytest11` entry point, so installing strom is enough; without the
installed metadata, load it with `-p strom.testing.pytest_plugin`. A suite that used a Kafka
container switches by making its bootstrap fixture return `kafka_bootstrap`.

Fixtures:
- `kafka_broker` (session): an `EmbeddedBroker`, started on first use. Under pytest-xdist
  every worker is its own session, so every worker gets its own broker.
- `kafka_bootstrap`: `bootstrap.servers` for the test: the session broker's, or a broker
  of its own when the test is marked `@pytest.mark.strom(config={...})`.
- `kafka_topic`: a fresh, uniquely named topic on that broker (`partitions=`,
  `topic_config=` in the same marker).
- `kafka_cluster` (session): an `EmbeddedCluster` of 3 brokers with ZooKeeper; skipped with
  the reason when ZooKeeper is not installed.
- `strom_broker_factory`: `factory(config={...}, mode=...)` starts more brokers for one
  test, all closed after it.

Options: `--strom-config KEY=VALUE` (repeatable; also the `strom_config` ini lines) for the
session broker, `--strom-mode thread|process` (ini `strom_mode`), and `--strom-keep-data`,
which keeps the log dirs of brokers a failed test used and lists them at the end.
"""

from __future__ import annotations

import re
import uuid

import pytest

_USED = pytest.StashKey[list]()  # the brokers a test used (item stash)
_KEPT = pytest.StashKey[list]()  # (test id, log dir) kept for inspection (config stash)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("strom", "strom embedded Kafka broker")
    group.addoption("--strom-config", action="append", default=[], metavar="KEY=VALUE",
                    help="a broker config for the session broker (repeatable)")
    group.addoption("--strom-mode", choices=["thread", "process"], default=None,
                    help="run brokers in a thread of the test process (default) or as "
                         "child processes")
    group.addoption("--strom-keep-data", action="store_true", default=False,
                    help="keep the log dirs of the brokers a failed test used")
    parser.addini("strom_config", type="linelist", default=[],
                  help="KEY=VALUE broker configs for the session broker")
    parser.addini("strom_mode", default="thread", help="thread or process")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "strom(config=None, partitions=1, topic_config=None): a broker of the "
                   "test's own with `config`; the size and configs of `kafka_topic`")
    config.stash[_KEPT] = []


def _session_config(config: pytest.Config) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in [*config.getini("strom_config"), *config.getoption("strom_config")]:
        key, sep, value = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--strom-config / strom_config take KEY=VALUE: {item!r}")
        out[key.strip()] = value.strip()
    return out


def _mode(config: pytest.Config) -> str:
    return config.getoption("strom_mode") or config.getini("strom_mode")


def _marker(request: pytest.FixtureRequest) -> dict:
    marker = request.node.get_closest_marker("strom")
    return dict(marker.kwargs) if marker is not None else {}


def _use(request: pytest.FixtureRequest, broker) -> None:
    """Remember that the running test used `broker` (for --strom-keep-data)."""
    request.node.stash.setdefault(_USED, []).append(broker)


def _close(config: pytest.Config, broker) -> None:
    try:
        broker.close()
    finally:
        if getattr(broker, "keep_data", False):
            config.stash[_KEPT].append(broker.log_dir)


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config):
    """The session's broker (one per xdist worker)."""
    from strom.testing.embedded import EmbeddedBroker

    broker = EmbeddedBroker(config=_session_config(pytestconfig), mode=_mode(pytestconfig))
    broker.start()
    yield broker
    _close(pytestconfig, broker)


@pytest.fixture
def strom_broker_factory(request: pytest.FixtureRequest, pytestconfig: pytest.Config):
    """factory(config=None, mode=None, **kwargs) -> a started EmbeddedBroker."""
    from strom.testing.embedded import EmbeddedBroker

    started: list = []

    def start(config: dict | None = None, mode: str | None = None, **kwargs):
        broker = EmbeddedBroker(config=config, mode=mode or _mode(pytestconfig), **kwargs)
        started.append(broker)
        _use(request, broker)
        return broker.start()

    yield start
    for broker in reversed(started):
        _close(pytestconfig, broker)


@pytest.fixture
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """`bootstrap.servers` of the test's broker."""
    marker = _marker(request)
    if marker.get("config") is not None:
        broker = request.getfixturevalue("strom_broker_factory")(config=marker["config"])
    else:
        broker = request.getfixturevalue("kafka_broker")
        _use(request, broker)
    return broker.bootstrap


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest, kafka_bootstrap: str) -> str:
    """A new topic, named after the test and unique across workers and runs."""
    from strom.testing.kafka import create_topic

    marker = _marker(request)
    stem = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:180]
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    config = {k: str(v) for k, v in (marker.get("topic_config") or {}).items()}
    return create_topic(kafka_bootstrap, name, int(marker.get("partitions", 1)), config=config)


@pytest.fixture(scope="session")
def kafka_cluster(pytestconfig: pytest.Config):
    """A 3-broker cluster with its own ZooKeeper (skipped when ZooKeeper is missing)."""
    from strom.testing.embedded import EmbeddedBrokerError, EmbeddedCluster

    try:
        cluster = EmbeddedCluster(brokers=3, config=_session_config(pytestconfig))
    except EmbeddedBrokerError as e:
        pytest.skip(str(e))
    with cluster:
        yield cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and item.config.getoption("strom_keep_data"):
        used = [*item.stash.get(_USED, []),
                *(v for v in getattr(item, "funcargs", {}).values() if hasattr(v, "keep_data"))]
        for broker in dict.fromkeys(used):
            broker.keep_data = True
            report.sections.append(("strom", f"log dir kept: {broker.log_dir}"))
    return report


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    kept = config.stash.get(_KEPT, [])
    if kept:
        terminalreporter.write_sep("-", "strom: log dirs kept for failed tests")
        for path in kept:
            terminalreporter.write_line(str(path))
