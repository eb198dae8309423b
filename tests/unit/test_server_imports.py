"""The broker process does not import hypothesis (kio would register strategies with it,
half a second of start-up), and hypothesis still imports normally afterwards; `strom
server` imports no other tool's module (one of them imports kio before the broker's
import can keep hypothesis out: start-up took 0.69-0.99 s instead of 0.45-0.59)."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

CHILD = """
import sys
from strom.cli.server import _import_broker
run = _import_broker()
assert callable(run)
loaded = sorted(m for m in sys.modules if m == "hypothesis" or m.startswith("hypothesis."))
assert not loaded, loaded
import hypothesis.strategies  # not blocked for later importers
print("ok")
"""


def test_broker_import_skips_hypothesis():
    pytest.importorskip("hypothesis")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


THROUGH_THE_CLI = """
import sys
import strom.cli.server as server

def imported_then_stop():
    server_run = real()
    assert callable(server_run)
    loaded = sorted(m for m in sys.modules if m == "hypothesis" or m.startswith("hypothesis.")
                    or (m.startswith("strom.cli.") and m not in
                        ("strom.cli.main", "strom.cli.server")))
    assert not loaded, loaded
    print("ok")
    sys.exit(0)

real, server._import_broker = server._import_broker, imported_then_stop
from strom.cli.main import main
main(["server", "--override", "log.dirs=" + sys.argv[1]])
"""


def test_strom_server_imports_neither_hypothesis_nor_other_tools():
    pytest.importorskip("hypothesis")
    with tempfile.TemporaryDirectory() as log_dir:
        out = subprocess.run([sys.executable, "-c", THROUGH_THE_CLI, log_dir],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
