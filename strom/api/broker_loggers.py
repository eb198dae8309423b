"""BROKER_LOGGER resources (type 8) of DescribeConfigs and IncrementalAlterConfigs, as
Kafka's Log4jController: the broker's loggers with their levels, and level changes at run
time. strom's loggers are Python's: log4j's levels map to Python's (TRACE and DEBUG are
DEBUG, WARN is WARNING, FATAL is CRITICAL) and back (WARNING shows as WARN, CRITICAL as
FATAL); `root` is the root logger. A logger's level shown is its effective one.
"""

from __future__ import annotations

import logging

from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make

ROOT = "root"
VALID_LEVELS = ("FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE")  # Kafka's LogLevelConfig
_TO_PYTHON = {"FATAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARN": logging.WARNING,
              "INFO": logging.INFO, "DEBUG": logging.DEBUG, "TRACE": logging.DEBUG}
_FROM_PYTHON = {logging.CRITICAL: "FATAL", logging.ERROR: "ERROR", logging.WARNING: "WARN",
                logging.INFO: "INFO", logging.DEBUG: "DEBUG"}
DYNAMIC_BROKER_LOGGER_CONFIG = 6
SET, DELETE = 0, 1


def check_broker(broker_id: int, name: str) -> None:
    if not name:
        raise KafkaError("Broker id must not be empty", ErrorCode.invalid_request)
    if name != str(broker_id):
        raise KafkaError(f"Unexpected broker id, expected {broker_id} but received {name}",
                         ErrorCode.invalid_request)


def loggers() -> dict[str, logging.Logger]:
    """The existing loggers by name, the root as `root`."""
    out: dict[str, logging.Logger] = {ROOT: logging.getLogger()}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            out[name] = logger
    return out


def level_name(logger: logging.Logger) -> str:
    level = logger.getEffectiveLevel()
    return _FROM_PYTHON.get(level, logging.getLevelName(level))


def describe(broker_id: int, mod, name: str, keys) -> tuple:
    check_broker(broker_id, name)
    existing = loggers()
    shown = sorted(existing) if not keys else [k for k in keys if k in existing]
    return tuple(make(mod.DescribeConfigsResourceResult, name=n,
                      value=level_name(existing[n]), read_only=False,
                      config_source=DYNAMIC_BROKER_LOGGER_CONFIG, is_default=False,
                      is_sensitive=False, synonyms=(), config_type=2, documentation=None)
                 for n in shown)


def alter(broker_id: int, name: str, configs, validate_only: bool) -> None:
    """IncrementalAlterConfigs on this broker's loggers: every change is checked before
    any is made (Kafka's errors and messages)."""
    check_broker(broker_id, name)
    existing = loggers()
    changes: list[tuple[logging.Logger, int]] = []
    for c in configs:
        if c.config_operation not in (SET, DELETE):
            op = {2: "APPEND", 3: "SUBTRACT"}.get(c.config_operation, str(c.config_operation))
            raise KafkaError(f"{op} operation is not allowed for the BROKER_LOGGER resource",
                             ErrorCode.invalid_request)
        logger = existing.get(c.name)
        if logger is None:
            raise KafkaError(f"Logger {c.name} does not exist!", ErrorCode.invalid_config)
        if c.config_operation == DELETE:
            if c.name == ROOT:
                raise KafkaError("Removing the log level of the root logger is not allowed",
                                 ErrorCode.invalid_request)
            changes.append((logger, logging.NOTSET))
            continue
        level = (c.value or "").strip()
        if level not in VALID_LEVELS:
            raise KafkaError(f"Cannot set the log level of {c.name} to {c.value} as it is not "
                             f"a supported log level. Valid log4j levels are "
                             f"{', '.join(VALID_LEVELS)}", ErrorCode.invalid_config)
        changes.append((logger, _TO_PYTHON[level]))
    if not validate_only:
        for logger, level in changes:
            logger.setLevel(level)
