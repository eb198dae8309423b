"""The broker process does not import hypothesis (kio would register strategies with it,
half a second of start-up), and hypothesis still imports normally afterwards."""

from __future__ import annotations

import subprocess
import sys

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
