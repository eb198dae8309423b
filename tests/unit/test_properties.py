"""strom.properties: Java's Properties.load rules, pinned by golden cases (what Java 17's
Properties.load returns for the same text), and the writer's round trip."""

from __future__ import annotations

import pytest

from strom import properties
from strom.properties import PropertiesError, dumps, loads


def test_server_properties_syntax():
    text = (
        "# a comment\n"
        "! another comment\n"
        "   # indented comment\n"
        "\n"
        "broker.id=1\n"
        "log.dirs = /tmp/a,/tmp/b\n"
        "listeners: PLAINTEXT://:9092\n"
        "num.partitions 3\n"
        "zookeeper.connect=host1:2181,\\\n"
        "    host2:2181,\\\n"
        "\thost3:2181/chroot\n"
        "empty=\n"
        "bare\n"
        "url=http://x:1/p?a=b\n"
        "# comment ending in a backslash does not continue \\\n"
        "after.comment=yes\n"
    )
    assert loads(text) == {
        "broker.id": "1",
        "log.dirs": "/tmp/a,/tmp/b",
        "listeners": "PLAINTEXT://:9092",
        "num.partitions": "3",
        "zookeeper.connect": "host1:2181,host2:2181,host3:2181/chroot",
        "empty": "",
        "bare": "",
        "url": "http://x:1/p?a=b",
        "after.comment": "yes",
    }


@pytest.mark.parametrize("text, expected", [
    # separators: `=`, `:`, whitespace, whitespace around one `=` or `:`
    ("key value", {"key": "value"}),
    ("key:value", {"key": "value"}),
    ("key\t=\t value", {"key": "value"}),
    ("key = = value", {"key": "= value"}),  # only the first `=` separates
    ("key :=value", {"key": "=value"}),
    ("key  : value : more", {"key": "value : more"}),
    ("  \f  key=value", {"key": "value"}),
    # values keep their trailing whitespace, keys their escaped separators
    ("key=value  ", {"key": "value  "}),
    ("a\\=b=c", {"a=b": "c"}),
    ("a\\:b:c", {"a:b": "c"}),
    ("a\\ b c", {"a b": "c"}),
    ("key=\\  leading", {"key": "  leading"}),
    # escapes
    ("k=a\\tb\\nc\\rd\\fe", {"k": "a\tb\nc\rd\fe"}),
    ("k=\\u00e9t\\u00E9", {"k": "été"}),
    ("k=\\q\\\\", {"k": "q\\"}),
    ("k=C:\\\\dir\\\\file", {"k": "C:\\dir\\file"}),
    ("\\#notcomment=1", {"#notcomment": "1"}),
    # continuations
    ("k=a\\\n   b\\\n\tc", {"k": "abc"}),
    ("k=a\\\\\nb=c", {"k": "a\\", "b": "c"}),  # an even count of backslashes does not
    ("k=a\\\\\\\n b", {"k": "a\\b"}),
    ("k=a\\\n# not a comment", {"k": "a# not a comment"}),
    ("k=a\\\n\nb=c", {"k": "a", "b": "c"}),  # an empty line ends the continuation
    ("k=a\\", {"k": "a"}),  # a backslash at the end of the text is dropped
    ("ke\\\n  y=v", {"key": "v"}),
    # line breaks: \n, \r, \r\n; other characters Python calls line breaks are not
    ("a=1\rb=2\r\nc=3\n", {"a": "1", "b": "2", "c": "3"}),
    ("a=1\x0bb=2", {"a": "1\x0bb=2"}),
    ("a=1\u2028b", {"a": "1\u2028b"}),
    # comments, blank lines and repeats
    ("#a=1\n!b=2\n \t\n", {}),
    ("a=1 # not a comment", {"a": "1 # not a comment"}),
    ("a=1\na=2", {"a": "2"}),
    ("=value", {"": "value"}),
    (":", {"": ""}),
])
def test_java_rules(text, expected):
    assert loads(text) == expected


def test_malformed_unicode_escape():
    with pytest.raises(PropertiesError, match="line 2"):
        loads("ok=1\nbad=\\u12g4\n")
    with pytest.raises(PropertiesError):
        loads("bad=\\u12")


def test_dumps_round_trip():
    values = {"cluster.id": "x-Y_z", "a b": " lead", "k=:": "#!\\\t\n", "e": "", "u": "é\x01"}
    text = dumps(values, comment="Written by strom")
    assert text.startswith("#Written by strom\n")
    assert loads(text) == values
    assert dumps({"node.id": "1", "version": "1"}) == "node.id=1\nversion=1\n"


def test_load_reads_utf8_file(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("sasl.username=usér\n", encoding="utf-8")
    assert properties.load(str(path)) == {"sasl.username": "usér"}


def test_tools_read_client_config_files_with_the_same_rules(tmp_path):
    from strom.cli._common import ToolError, load_properties

    path = tmp_path / "client.properties"
    path.write_text("security.protocol : SASL_PLAINTEXT  \n"
                    "sasl.jaas.config=a\\\n  b\n"
                    "bare\n", encoding="utf-8")
    assert load_properties(str(path)) == {
        "security.protocol": "SASL_PLAINTEXT",  # trailing blanks would reach librdkafka
        "sasl.jaas.config": "ab", "bare": ""}
    assert load_properties(None) == {}
    path.write_text("k=\\uZZZZ\n", encoding="utf-8")
    with pytest.raises(ToolError, match="line 1"):
        load_properties(str(path))
    with pytest.raises(ToolError, match="cannot read"):
        load_properties(str(tmp_path / "missing.properties"))
