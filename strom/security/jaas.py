"""The options of a JAAS login context, as Kafka's `sasl.jaas.config` holds them:

    org.apache.kafka.common.security.plain.PlainLoginModule required
        username="admin" password="admin-secret" user_alice="alice-secret";

Only the options matter to strom (the login module names the mechanism already)."""

from __future__ import annotations

import re

from strom.config import ConfigError

_HEAD = re.compile(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\s*", re.I)
_OPTION = re.compile(r'\s*([\w.\-]+)\s*=\s*(?:"((?:\\.|[^"\\])*)"|([^\s;"]+))\s*')


def parse_options(text: str) -> dict[str, str]:
    """The key=value options of the first (only) login module; raises ConfigError."""
    m = _HEAD.match(text)
    if m is None:
        raise ConfigError("Invalid sasl.jaas.config: expected '<LoginModule> required "
                          "key=\"value\" ... ;'")
    pos, options = m.end(), {}
    while pos < len(text) and text[pos] != ";":
        o = _OPTION.match(text, pos)
        if o is None:
            raise ConfigError(f"Invalid sasl.jaas.config near {text[pos:pos + 30]!r}")
        value = o.group(2) if o.group(2) is not None else o.group(3)
        options[o.group(1)] = re.sub(r"\\(.)", r"\1", value)
        pos = o.end()
    if not text[pos:].strip().startswith(";"):
        raise ConfigError("Invalid sasl.jaas.config: it must end with ';'")
    return options
