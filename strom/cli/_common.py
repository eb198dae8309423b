"""Helpers shared by the client tools (topics, produce, consume, get-offsets, consumer-groups,
leader-election, reassign-partitions).

Nothing here imports confluent-kafka at module level, so `strom server` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from strom import properties

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

# Client settings every tool starts from; user-given properties override them.
BASE_CLIENT_CONFIG: dict[str, object] = {
    # An idle connection closed by the broker is not worth a log line in a CLI tool.
    "log.connection.close": False,
    # Nor are librdkafka's informational (level 6) lines: a client closed right after an
    # answer (a tool reporting an error, a describe that fell back from one API to another)
    # can print "Purging 1 unserved events from background queue" to stderr. Notices,
    # warnings and errors still show, as Kafka's tools log at WARN.
    "log_level": 5,
}


class ToolError(Exception):
    """A failure to report as one line on stderr, exiting with status 1."""


def add_bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-server",
        default=DEFAULT_BOOTSTRAP,
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"broker(s) to connect to (default: {DEFAULT_BOOTSTRAP})",
    )


def add_command_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--command-config", metavar="FILE",
                        help="properties file with client settings (librdkafka names)")


def add_client_settings_arguments(parser: argparse.ArgumentParser, client: str,
                                  property_help: str) -> None:
    """A console tool's settings, as Kafka's: --property (the tool's own, `property_help`),
    --<client>-property KEY=VALUE and --<client>.config FILE (the client's, librdkafka
    names); `client` is "producer" or "consumer"."""
    parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                        help=property_help)
    parser.add_argument(f"--{client}-property", action="append", default=[],
                        metavar="KEY=VALUE", help=f"{client} setting, librdkafka names (repeatable)")
    parser.add_argument(f"--{client}.config", dest=f"{client}_config", metavar="FILE",
                        help=f"properties file with {client} settings")


def add_flags(parser: argparse.ArgumentParser | argparse._ActionsContainer,
              flags: dict[str, str]) -> None:
    """Options that take no value (store_true), in this order: flag -> help."""
    for flag, help_text in flags.items():
        parser.add_argument(flag, action="store_true", help=help_text)


def add_actions(parser: argparse.ArgumentParser, actions: dict[str, str]) -> None:
    """The tool's actions (`--create`, `--list`, ...: flag -> help), of which exactly one is
    required; `chosen_action` tells which was given."""
    add_flags(parser.add_mutually_exclusive_group(required=True), actions)


def chosen_action(args: argparse.Namespace, actions: Iterable[str]) -> str:
    """The one of `actions` (argparse dests: "reset_offsets") given on the command line."""
    return next(a for a in actions if getattr(args, a))


def option_name(dest: str) -> str:
    """An argparse dest as the option is written: "reset_offsets" -> "--reset-offsets"."""
    return "--" + dest.replace("_", "-")


def client_config(bootstrap: str, properties_file: str | None,
                  defaults: dict[str, object] | None = None,
                  overrides: dict[str, str] | None = None) -> dict[str, object]:
    """A confluent-kafka client's settings: BASE_CLIENT_CONFIG and the tool's `defaults`,
    overridden by the properties file's and then by `overrides` (the command line's
    KEY=VALUE settings), with `bootstrap.servers` set last."""
    return {**BASE_CLIENT_CONFIG, **(defaults or {}), **load_properties(properties_file),
            **(overrides or {}), "bootstrap.servers": bootstrap}


def client_errors() -> tuple[type[BaseException], ...]:
    """The failures a client tool reports as one line and exit status 1: its own ToolError,
    a confluent-kafka error, a cancelled future. Imported here, on use, so that `strom
    server` never loads confluent-kafka."""
    from concurrent.futures import CancelledError

    from confluent_kafka import KafkaException

    return ToolError, KafkaException, CancelledError


def read_text(path: str) -> str:
    """A UTF-8 text file given on the command line; ToolError when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise ToolError(f"cannot read {path}: not UTF-8 text") from None


def parse_key_values(items: list[str] | None, option: str) -> dict[str, str]:
    """`["a=1", "b=x=y"]` -> `{"a": "1", "b": "x=y"}`; the key is stripped, the value kept."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ToolError(f"{option} expects key=value, got {item!r}")
        out[key] = value
    return out


def load_properties(path: str | None) -> dict[str, str]:
    """Read a Java properties file (see strom.properties) of client settings. Values lose
    their trailing whitespace, which librdkafka would otherwise take literally."""
    if not path:
        return {}
    try:
        values = properties.load(path)
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from e
    except properties.PropertiesError as e:
        raise ToolError(f"{path}: {e}") from e
    return {k: v.rstrip() for k, v in values.items()}


def error_text(exc: BaseException) -> str:
    """The human-readable part of a confluent-kafka exception (or any other)."""
    arg = exc.args[0] if exc.args else None
    if arg is not None and hasattr(arg, "str") and callable(arg.str):
        return arg.str()  # KafkaError
    return str(exc) or type(exc).__name__


# the client properties of this run's tool (--command-config): its own requests are sent
# with the same security as its confluent-kafka clients (set once by main.py)
TOOL_PROPERTIES: dict[str, object] = {}


def set_tool_properties(path: str | None) -> None:
    TOOL_PROPERTIES.clear()
    TOOL_PROPERTIES.update(load_properties(path))


def broker_request(host: str, port: int, request, client_id: str, timeout_s: float):
    """Send one kio request (built with strom.protocol.messages) to one broker, on a
    connection of its own made by strom.protocol's client, secured as the tool's
    --command-config says (TLS, SASL), and return the response entity. Raises
    BrokerConnectionError (a ConnectionError) when the connection or the request fails,
    ToolError when the properties cannot be used."""
    import asyncio

    from strom.config import ConfigError
    from strom.protocol.client import BrokerConnection
    from strom.security.inter_broker import tool_security

    try:
        security = tool_security(TOOL_PROPERTIES)
    except ConfigError as e:
        raise ToolError(str(e)) from None

    async def once():
        conn = BrokerConnection(host, port, client_id=client_id, timeout_s=timeout_s,
                                security=security)
        try:
            await conn.connect()
            return await conn.request(request)
        finally:
            await conn.close()

    return asyncio.run(once())


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1
