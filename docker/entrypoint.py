"""The container's entry point: broker configs from the environment, then `strom server`.

The common Kafka images' convention: every `KAFKA_<NAME>` (or `STROM_<NAME>`) variable is
the config whose name is <NAME> lower-cased, with `_` for `.`, `__` for `_` and `___` for
`-`, so `KAFKA_NUM_PARTITIONS=6` is num.partitions=6 and
`KAFKA_ZOOKEEPER_CONNECT=zk:2181` is zookeeper.connect. `STROM_` wins over `KAFKA_` for the
same key. The variables that configure the JVM of Kafka's images (KAFKA_HEAP_OPTS,
KAFKA_OPTS, KAFKA_JMX_*, KAFKA_LOG4J_*, ...) are not configs and are ignored;
`STROM_LOG_LEVEL` is the broker's `--log-level`.

Defaults for a container: data in /var/lib/strom/data (the image's volume), listening on
PLAINTEXT://0.0.0.0:9092 and advertised as PLAINTEXT://localhost:9092. Arguments given to
the container are passed on to `strom server` (e.g. `--override key=value`).
"""

from __future__ import annotations

import os
import sys

PREFIXES = ("KAFKA_", "STROM_")  # in increasing precedence
NOT_CONFIGS = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS",
               "KAFKA_DEBUG", "KAFKA_VERSION", "KAFKA_HOME", "STROM_LOG_LEVEL"}
NOT_CONFIG_PREFIXES = ("KAFKA_JMX_", "KAFKA_LOG4J_")
DEFAULTS = {
    "log.dirs": "/var/lib/strom/data",
    "listeners": "PLAINTEXT://0.0.0.0:9092",
    "advertised.listeners": "PLAINTEXT://localhost:9092",
}


def config_name(variable: str) -> str:
    """KAFKA_LOG_RETENTION_MS -> log.retention.ms; ___ -> '-', __ -> '_', _ -> '.'."""
    body = variable.split("_", 1)[1].lower()
    return body.replace("___", "\0").replace("__", "\1").replace("_", ".") \
        .replace("\0", "-").replace("\1", "_")


def configs_from(environ: dict[str, str]) -> dict[str, str]:
    """The broker configs the environment gives, over the container's defaults."""
    out = dict(DEFAULTS)
    for prefix in PREFIXES:
        for variable, value in sorted(environ.items()):
            if not variable.startswith(prefix) or variable == prefix:
                continue
            if variable in NOT_CONFIGS or variable.startswith(NOT_CONFIG_PREFIXES):
                continue
            out[config_name(variable)] = value
    return out


def command(environ: dict[str, str], argv: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "strom", "server",
           "--log-level", environ.get("STROM_LOG_LEVEL", "INFO")]
    for key, value in configs_from(environ).items():
        cmd += ["--override", f"{key}={value}"]
    return cmd + argv


if __name__ == "__main__":
    args = command(dict(os.environ), sys.argv[1:])
    os.execv(args[0], args)
