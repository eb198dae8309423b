"""Helpers shared by the client tools (topics, produce, consume, get-offsets).

Nothing here imports confluent-kafka at module level, so `strom server` stays fast.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

# Client settings every tool starts from; user-given properties override them.
BASE_CLIENT_CONFIG: dict[str, object] = {
    # An idle connection closed by the broker is not worth a log line in a CLI tool.
    "log.connection.close": False,
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
    """Read a Java-style properties file (`key=value` or `key: value`, `#`/`!` comments)."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from e
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise ToolError(f"{path}:{number}: expected key=value, got {raw!r}")
        out[line[:cut].strip()] = line[cut + 1:].strip()
    return out


def error_text(exc: BaseException) -> str:
    """The human-readable part of a confluent-kafka exception (or any other)."""
    arg = exc.args[0] if exc.args else None
    if arg is not None and hasattr(arg, "str") and callable(arg.str):
        return arg.str()  # KafkaError
    return str(exc) or type(exc).__name__


def broker_request(host: str, port: int, request, client_id: str, timeout_s: float):
    """Send one kio request (built with strom.protocol.messages) to one broker over PLAINTEXT,
    on a connection of its own made by strom.protocol's client, and return the response
    entity. Raises BrokerConnectionError (a ConnectionError) when the connection or the
    request fails."""
    import asyncio

    from strom.protocol.client import BrokerConnection

    async def once():
        conn = BrokerConnection(host, port, client_id=client_id, timeout_s=timeout_s)
        try:
            await conn.connect()
            return await conn.request(request)
        finally:
            await conn.close()

    return asyncio.run(once())


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1
