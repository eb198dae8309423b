"""Shared fixtures: real broker processes and unique topic names.

- `broker`: a fresh broker for one test (stopped at teardown).
- `module_broker`: one broker shared by a test module (default settings, or those a module
  gives by overriding the module-scoped `broker_overrides` fixture).
- `start_broker(overrides=..., log_dir=...)`: a factory for tests that need their own
  settings or several brokers; everything it started is stopped at teardown.
- `topic_name`: a unique, valid topic name per test; call `topic_name.new()` for more.

When a test using a broker fails, the broker's log is attached to the report.

`STROM_TEST_BROKER_ARGV` (a shell-quoted command with `{host}`, `{port}`, `{bootstrap}`,
`{log_dir}` placeholders) runs the same tests against another broker, e.g. a peer, to tell a
test's mistake from the broker's: tests that pass broker overrides are skipped then.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import uuid

import pytest

from strom.testing.broker import BrokerProcess

_counter = itertools.count()
_PEER_ARGV = shlex.split(os.environ.get("STROM_TEST_BROKER_ARGV", "")) or None


def new_broker(overrides: dict | None = None, **kwargs) -> BrokerProcess:
    """A (not yet started) BrokerProcess, or the peer from STROM_TEST_BROKER_ARGV."""
    if _PEER_ARGV is not None:
        if overrides or kwargs.get("log_dir") is not None:
            pytest.skip("broker overrides/restarts need strom (STROM_TEST_BROKER_ARGV is set)")
        kwargs["argv_template"] = _PEER_ARGV
    return BrokerProcess(overrides=overrides, **kwargs)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    brokers: list[BrokerProcess] = getattr(item, "_strom_brokers", [])
    for b in brokers:
        text = b.log_text()
        if len(text) > 20000:
            text = "...\n" + text[-20000:]
        report.sections.append((f"strom broker {b.bootstrap} log", text))


def _track(request, broker: BrokerProcess) -> None:
    node = request.node
    if not hasattr(node, "_strom_brokers"):
        node._strom_brokers = []
    node._strom_brokers.append(broker)


@pytest.fixture
def start_broker(request):
    started: list[BrokerProcess] = []

    def start(overrides: dict | None = None, **kwargs) -> BrokerProcess:
        b = new_broker(overrides, **kwargs)
        started.append(b)
        _track(request, b)
        b.start()
        return b

    yield start
    for b in reversed(started):
        b.close()


@pytest.fixture
def broker(start_broker) -> BrokerProcess:
    return start_broker()


@pytest.fixture(scope="module")
def broker_overrides() -> dict | None:
    """Settings for `module_broker`; a module overrides this fixture to tune its broker
    (such modules are skipped when STROM_TEST_BROKER_ARGV is set)."""
    return None


@pytest.fixture(scope="module")
def module_broker(broker_overrides):
    b = new_broker(broker_overrides)
    try:
        b.start()
        yield b
    finally:
        b.close()


@pytest.fixture(autouse=True)
def _attach_module_broker_log(request):
    # Attach the shared broker's log to failing tests that use it.
    if "module_broker" in request.fixturenames:
        _track(request, request.getfixturevalue("module_broker"))
    yield


class TopicNames:
    """Unique topic names derived from the test's name."""

    def __init__(self, base: str) -> None:
        self.base = base

    def new(self, suffix: str = "") -> str:
        n = next(_counter)
        name = f"{self.base}-{os.getpid()}-{n}-{uuid.uuid4().hex[:6]}"
        if suffix:
            name += f"-{suffix}"
        return name

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.base


@pytest.fixture
def topic_names(request) -> TopicNames:
    base = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name).strip("-")[:60] or "t"
    return TopicNames(base)


@pytest.fixture
def topic_name(topic_names) -> str:
    return topic_names.new()
