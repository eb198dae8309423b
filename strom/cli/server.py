"""Start a strom broker.

With no arguments the broker listens on PLAINTEXT://127.0.0.1:9092 and keeps its data in
./strom-data: no config file, no ZooKeeper, no JVM. A Kafka `server.properties` file and
`--override key=value` pairs take Kafka's own config names and defaults (see
docs/configuration.md). Unknown keys are warned about; invalid values stop the start-up
with a clear message. SIGTERM or Ctrl-C shuts down cleanly (flush, checkpoints); SIGUSR1
logs the event loop's lag since the previous SIGUSR1 (one line, `event loop lag {...}`).

With `--override zookeeper.connect=host:2181[/chroot]` (and a distinct node.id, listener
and log dir per broker) brokers form a replicated cluster whose metadata lives in
ZooKeeper; on SIGTERM such a broker first hands its partition leaderships to other
in-sync replicas (controlled.shutdown.enable).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="a server.properties file")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config, e.g. --override log.dirs=/tmp/strom "
                             "(repeatable; wins over the file)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="broker log level (default INFO)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format="[%(asctime)s] %(levelname)s %(message)s (%(name)s)")
    from strom.config import BrokerConfig, ConfigError

    try:
        config = BrokerConfig.load(args.config, args.override)
    except ConfigError as e:
        print(f"strom server: {e}", file=sys.stderr)
        return 2
    run_broker = _import_broker()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        uvloop = None
    from strom.log.manager import LogDirError

    try:
        if uvloop is not None:
            uvloop.run(run_broker(config))
        else:
            asyncio.run(run_broker(config))
    except (OSError, LogDirError) as e:
        logging.getLogger("strom").error("Cannot start: %s", e)
        return 1
    return 0


def _import_broker():
    """The broker's `run`, imported without hypothesis: kio registers hypothesis
    strategies for its types whenever hypothesis is importable, which adds about half a
    second to start-up on a machine that has it installed (a test environment). A broker
    never uses them."""
    blocked = "hypothesis" not in sys.modules
    if blocked:
        sys.modules["hypothesis"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        from strom.server.broker import run
    finally:
        if blocked and "hypothesis" in sys.modules and sys.modules["hypothesis"] is None:
            del sys.modules["hypothesis"]
    return run
