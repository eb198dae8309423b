"""Java properties files (`server.properties`, `meta.properties`, a tool's `--command-config`),
read as `java.util.Properties.load` reads them and written as `Properties.store` writes them.

Reading, line by line:
    - natural lines end at `\\n`, `\\r` or `\\r\\n`; leading whitespace (space, tab, form
      feed) is skipped, and a line that is then empty is ignored;
    - a line whose first character is `#` or `!` is a comment (a comment never continues);
    - a line ending in an odd number of backslashes continues on the next line: that
      backslash and the next line's leading whitespace are dropped;
    - the key runs to the first unescaped `=`, `:` or whitespace; then whitespace, at most
      one `=` or `:`, and whitespace again separate it from the value, which runs to the end
      of the line with its trailing whitespace kept (`a=b`, `a : b`, `a b` and `a` alone,
      whose value is empty, are all valid);
    - in keys and values `\\t`, `\\n`, `\\r`, `\\f` and `\\uXXXX` are escapes, and a backslash
      before any other character stands for that character (`\\=`, `\\:`, `\\ `, `\\\\`).
The last value of a repeated key wins. The one difference from Java: text is UTF-8 (Java's
`load(InputStream)` reads ISO 8859-1), so a file written by hand in UTF-8 reads as written.

Owned by nobody: pure functions, used by every layer (config, log dirs, tools).
"""

from __future__ import annotations

import re

_WHITESPACE = " \t\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesError(ValueError):
    """Text that Java's Properties.load refuses too (a malformed `\\uXXXX` escape)."""


def loads(text: str) -> dict[str, str]:
    """The properties in `text`, in file order (the last of a repeated key wins)."""
    props: dict[str, str] = {}
    lines = _LINE_BREAK.split(text)
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip(_WHITESPACE)
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1]
            if i == len(lines):
                break  # a backslash at the end of the file is dropped, as in Java
            line += lines[i].lstrip(_WHITESPACE)
            i += 1
        key, value = _split(line)
        try:
            props[_unescape(key)] = _unescape(value)
        except PropertiesError as e:
            raise PropertiesError(f"line {number}: {e}") from None
    return props


def load(path: str) -> dict[str, str]:
    """The properties in the file at `path` (OSError if it cannot be read)."""
    with open(path, encoding="utf-8") as f:
        return loads(f.read())


def dumps(values: dict[str, str], comment: str | None = None) -> str:
    """`key=value` lines that `loads` (and Java) read back as `values`, after an optional
    `#` comment line."""
    head = f"#{comment}\n" if comment is not None else ""
    return head + "".join(f"{_escape(k, True)}={_escape(v, False)}\n"
                          for k, v in values.items())


def _continues(line: str) -> bool:
    backslashes = len(line) - len(line.rstrip("\\"))
    return backslashes % 2 == 1


def _split(line: str) -> tuple[str, str]:
    """A logical line's raw (still escaped) key and value."""
    end = 0
    escaped = False
    while end < len(line):
        c = line[end]
        if not escaped and (c in "=:" or c in _WHITESPACE):
            break
        escaped = c == "\\" and not escaped
        end += 1
    rest = line[end:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return line[:end], rest


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        i += 1
        if c != "\\" or i == len(raw):
            out.append(c)
            continue
        c = raw[i]
        i += 1
        if c == "u":
            digits = raw[i:i + 4]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise PropertiesError("Malformed \\uxxxx encoding.")
            out.append(chr(int(digits, 16)))
            i += 4
        else:
            out.append(_SIMPLE_ESCAPES.get(c, c))
    return "".join(out)


def _escape(text: str, is_key: bool) -> str:
    out = []
    for n, c in enumerate(text):
        if c == "\\" or c in "=:#!":
            out.append("\\" + c)
        elif c == " ":
            out.append("\\ " if is_key or n == 0 else " ")
        elif c in "\t\n\r\f":
            out.append("\\" + {"\t": "t", "\n": "n", "\r": "r", "\f": "f"}[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)
