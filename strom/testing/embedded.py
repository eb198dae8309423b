"""A real strom broker inside a Python program: for application tests and notebooks.

    from strom import EmbeddedBroker

    with EmbeddedBroker() as broker:                 # free port, temp log dir, removed after
        Producer({"bootstrap.servers": broker.bootstrap})
    async with EmbeddedBroker(config={"num.partitions": 6}) as broker:
        ...

Why it exists: teams that test against a Kafka container wait seconds for it per session.
The same broker a user runs with `strom server` starts here in a fraction of a second,
because it runs in the test process itself:

- `mode="thread"` (the default) runs the broker on its own event loop in a background
  thread. Clients in the same process (confluent-kafka, kafka-python, aiokafka on the
  caller's loop) talk to it over loopback TCP, exactly as to a remote broker. The broker's
  start-up calls `gc.freeze()` (its objects, and the caller's at that moment, are never
  collected): harmless in a test process.
- `mode="process"` runs `python -m strom server` as a child (strom.testing.broker), for
  code that forks, tests that kill the broker (`restart(crash=True)`), or when the caller's
  process must stay free of broker threads.

Both take any broker config (Kafka's names and values); an unknown key, a port in use or an
unusable log dir raise `EmbeddedBrokerError` from `start()` instead of hanging. Two defaults
differ from Kafka's, for tests: `group.initial.rebalance.delay.ms=0` (a consumer group forms
at once, not after 3 s) and `offsets.topic.replication.factor=1` (one broker); `config`
overrides both. `stop()`
shuts down cleanly (flush, checkpoints); `restart()` starts again on the same port and data,
so open clients reconnect and see what was written before.

`EmbeddedCluster(brokers=3)` starts a replicated cluster (broker child processes) with its
own ZooKeeper; it needs Debian's `zookeeper` package and says so when it is missing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Self

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError", "EmbeddedCluster"]

HOST = "127.0.0.1"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker (or cluster) could not start; the message says why."""


def _config_values(config: dict[str, Any] | None) -> dict[str, str]:
    """Kafka-style config values as strings (True -> "true"), checked against the broker's
    known keys so that a typo fails at once instead of being silently ignored."""
    from strom.config import BrokerConfig, ConfigError

    values = {k: (str(v).lower() if isinstance(v, bool) else str(v))
              for k, v in (config or {}).items()}
    try:
        parsed = BrokerConfig(values)
    except ConfigError as e:
        raise EmbeddedBrokerError(f"invalid broker config: {e}") from None
    if parsed.unknown:
        raise EmbeddedBrokerError(f"unknown broker config key(s): {sorted(parsed.unknown)}")
    return values


def _unique_topic_name() -> str:
    return f"topic-{uuid.uuid4().hex[:12]}"


class EmbeddedBroker:
    """One broker, started by `start()` or a (sync or async) `with`; see the module doc.

    The methods are for one caller thread at a time; `_thread`, `_loop`, `_broker` and
    `_process` belong to it. In thread mode the broker's own state lives on its loop in
    the broker thread, which the caller only ever touches through `call_soon_threadsafe`.
    """

    def __init__(self, config: dict[str, Any] | None = None, *, mode: str = "thread",
                 port: int | None = None, log_dir: str | os.PathLike | None = None,
                 node_id: int = 1, startup_timeout: float = 30.0) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', not {mode!r}")
        self.mode = mode
        self.config = _config_values(config)
        self.node_id = node_id
        self.startup_timeout = startup_timeout
        self._port_given = port is not None
        self.port = port if port is not None else _free_port()
        self._own_dir: Path | None = None
        if log_dir is None:
            from strom.testing.processes import keep_dir

            self._own_dir = Path(tempfile.mkdtemp(prefix="strom-embedded-"))
            keep_dir(self._own_dir)  # removed at exit even if never closed
            log_dir = self._own_dir / "data"
        self.log_dir = Path(log_dir)
        self.keep_data = False  # set to keep an own temp log dir at close (for inspection)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None  # strom.server.broker.Broker (thread mode)
        self._process = None  # strom.testing.broker.BrokerProcess (process mode)
        self._starts = 0

    # -- addresses ---------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """`bootstrap.servers` for clients: "127.0.0.1:<port>"."""
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        if self.mode == "process":
            return self._process is not None and self._process.is_alive()
        return self._thread is not None and self._thread.is_alive()

    def _settings(self) -> dict[str, str]:
        settings = {
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": str(self.log_dir),
            # a single broker: its internal topics cannot have more replicas than one
            "offsets.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        settings.update(self.config)
        return settings

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the broker and return once it accepts connections; `EmbeddedBrokerError`
        when it cannot (the message holds the cause)."""
        if self.running:
            return self
        if self.mode == "process":
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_process(self) -> None:
        from strom.testing.broker import BrokerProcess, BrokerStartError

        if self._process is None:
            settings = self._settings()
            for key in ("node.id", "listeners", "log.dirs"):
                settings.pop(key)
            try:
                self._process = BrokerProcess(self.log_dir, settings, node_id=self.node_id,
                                              port=self.port,
                                              startup_timeout=self.startup_timeout)
            except OSError as e:
                raise EmbeddedBrokerError(f"unusable log dir {self.log_dir}: {e}") from None
        try:
            self._process.start()
        except BrokerStartError as e:
            raise EmbeddedBrokerError(str(e)) from None

    def _start_thread(self) -> None:
        from strom.cli.server import _import_broker
        from strom.config import BrokerConfig, ConfigError

        # in the caller's thread: the import briefly hides hypothesis from sys.modules,
        # which must not race with an import of it elsewhere while start() waits
        _import_broker()

        try:
            config = BrokerConfig.load(None, [f"{k}={v}" for k, v in self._settings().items()])
        except ConfigError as e:
            raise EmbeddedBrokerError(f"invalid broker config: {e}") from None
        # a port picked here that someone took meanwhile is replaced (first start only;
        # later starts keep the port so that clients reconnect)
        tries = 1 if (self._port_given or self._starts) else 3
        self._starts += 1
        for attempt in range(tries):
            try:
                return self._start_thread_once(config)
            except EmbeddedBrokerError as e:
                if attempt + 1 == tries or not isinstance(e.__cause__, OSError) or \
                        e.__cause__.errno != errno.EADDRINUSE:
                    raise
                self.port = _free_port()
                config = BrokerConfig.load(
                    None, [f"{k}={v}" for k, v in self._settings().items()])

    def _start_thread_once(self, config) -> None:
        started = threading.Event()
        outcome: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(config, started, outcome),
                                        name=f"strom-embedded-broker-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(self.startup_timeout):
            self._stop_thread(10)
            raise EmbeddedBrokerError(
                f"broker did not start within {self.startup_timeout:.0f} s on {self.bootstrap}")
        if outcome:
            self._thread.join(10)
            self._thread = None
            error = outcome[0]
            raise EmbeddedBrokerError(f"broker could not start on {self.bootstrap} with "
                                      f"log dir {self.log_dir}: {error}") from error

    def _serve(self, config, started: threading.Event, outcome: list[BaseException]) -> None:
        """The broker thread: its own event loop, start-up, wait for stop(), shutdown."""
        from strom.server.broker import Broker  # imported by _start_thread

        try:
            import uvloop
            loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            broker = self._broker = Broker(config)
            try:
                try:
                    await broker.startup()
                except BaseException as e:  # SystemExit too: reported to start()
                    outcome.append(e)
                    return
                finally:
                    started.set()
                await broker.stopping.wait()
            finally:
                await broker.shutdown()

        try:
            loop.run_until_complete(main())
        except BaseException as e:  # noqa: BLE001 - only reachable after start-up
            if not started.is_set():
                outcome.append(e)
                started.set()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._loop = None

    def _stop_thread(self, timeout: float) -> None:
        thread, loop, broker = self._thread, self._loop, self._broker
        if thread is None:
            return
        if loop is not None and broker is not None:
            try:
                loop.call_soon_threadsafe(broker.stopping.set)
            except RuntimeError:  # the loop closed already
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise EmbeddedBrokerError(f"broker on {self.bootstrap} did not stop in {timeout} s")
        self._thread = None
        self._broker = None

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down cleanly (flush, checkpoints); the data stays for `restart()`."""
        if self.mode == "process":
            if self._process is not None:
                self._process.stop(timeout)
        else:
            self._stop_thread(timeout)

    def restart(self, *, crash: bool = False) -> Self:
        """Stop and start again on the same port and log dir. `crash=True` (process mode
        only) SIGKILLs the broker instead, so the restart recovers its logs."""
        if crash:
            if self.mode != "process":
                raise ValueError("restart(crash=True) needs mode='process'")
            if self._process is not None:
                self._process.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the temp log dir this broker made (unless `keep_data`)."""
        try:
            self.stop()
        finally:
            if self._process is not None:
                self._process.close()
                self._process = None
            if self._own_dir is not None:
                from strom.testing.processes import release_dir, remove_dir

                (release_dir if self.keep_data else remove_dir)(self._own_dir)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # -- conveniences ------------------------------------------------------------------------
    def create_topic(self, name: str | None = None, partitions: int = 1, *,
                     config: dict[str, Any] | None = None, timeout: float = 30.0) -> str:
        """Create a topic (a unique name when `name` is None), wait until every partition
        has a leader, and return its name."""
        from strom.testing.kafka import create_topic

        name = name or _unique_topic_name()
        create_topic(self.bootstrap, name, partitions,
                     config={k: str(v) for k, v in (config or {}).items()}, timeout=timeout)
        return name

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self.bootstrap} {self.mode} {state} log_dir={self.log_dir}>"


class EmbeddedCluster:
    """`brokers` broker processes sharing a ZooKeeper this object starts (Debian's
    `zookeeper` package); replicated topics work as on a real cluster."""

    def __init__(self, brokers: int = 3, config: dict[str, Any] | None = None) -> None:
        from strom.testing.zookeeper import find_zookeeper

        if find_zookeeper() is None:
            raise EmbeddedBrokerError(
                "EmbeddedCluster needs ZooKeeper: install Java and Debian's zookeeper "
                "package (apt-get install zookeeper), or use EmbeddedBroker for one broker")
        self.size = brokers
        self.config = _config_values(config)
        self.zookeeper = None
        self.cluster = None  # strom.testing.cluster.Cluster

    @property
    def bootstrap(self) -> str:
        if self.cluster is None:
            raise EmbeddedBrokerError("the cluster is not started")
        return self.cluster.bootstrap

    def start(self) -> Self:
        from strom.testing.broker import BrokerStartError
        from strom.testing.cluster import Cluster
        from strom.testing.zookeeper import ZooKeeperProcess, ZooKeeperStartError

        try:
            self.zookeeper = ZooKeeperProcess().start()
            self.cluster = Cluster(self.zookeeper.connect_string, self.size,
                                   overrides=self.config)
            self.cluster.start()
        except (ZooKeeperStartError, BrokerStartError, TimeoutError) as e:
            self.close()
            raise EmbeddedBrokerError(f"cluster could not start: {e}") from None
        return self

    def stop_broker(self, node_id: int) -> None:
        self.cluster.stop(node_id)

    def restart_broker(self, node_id: int, *, crash: bool = False) -> None:
        self.cluster.restart(node_id, crash=crash)

    def create_topic(self, name: str | None = None, partitions: int = 1,
                     replication_factor: int | None = None, *,
                     config: dict[str, Any] | None = None) -> str:
        """Create a topic (replicated on every broker by default) and wait until each
        partition has a leader and a full ISR; returns its name."""
        name = name or _unique_topic_name()
        self.cluster.create_topic(name, partitions, replication_factor or self.size,
                                  {k: str(v) for k, v in (config or {}).items()})
        return name

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        if self.zookeeper is not None:
            self.zookeeper.close()
            self.zookeeper = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)


def _free_port() -> int:
    from strom.testing.processes import free_port

    return free_port()

