"""The test harness itself (strom.testing.broker): it must never leave a broker behind,
never mistake another program for the broker, and keep the port across restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import strom.testing.broker as harness
from strom.testing.broker import BrokerProcess, BrokerStartError

pytestmark = pytest.mark.timeout(60)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive; /proc tells
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_broker_left_running_is_killed_at_interpreter_exit(tmp_path):
    pid_file = tmp_path / "pid"
    code = textwrap.dedent(f"""
        from strom.testing.broker import BrokerProcess
        b = BrokerProcess()
        b.start()
        open({str(pid_file)!r}, "w").write(str(b.pid))
        # exit without stop(): the atexit hook must kill it
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=40,
                   cwd=str(harness._REPO_ROOT))
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), f"broker {pid} outlived the interpreter that started it"


def test_another_program_on_the_port_is_not_taken_for_the_broker():
    foreign = socket.socket()
    foreign.bind(("127.0.0.1", 0))
    foreign.listen()
    b = BrokerProcess(port=foreign.getsockname()[1], startup_timeout=10)
    try:
        with pytest.raises(BrokerStartError):
            b.start()
        assert not b.is_alive()
    finally:
        b.close()
        foreign.close()


def test_restart_keeps_port_and_data_and_stop_reports_exit_code():
    with BrokerProcess() as b:
        port, first_pid = b.port, b.pid
        b.restart()
        assert (b.port, b.starts) == (port, 2) and b.pid != first_pid
        b.restart(crash=True)
        assert b.port == port and b.is_alive()
        assert b.log_text().count("=== strom.testing: start #") == 3
        assert b.log_text(current_run_only=True).startswith("=== strom.testing: start #3")
        assert b.stop() == 0
        assert not b.is_alive()


def test_a_broker_that_does_not_stop_is_killed_with_a_warning():
    with BrokerProcess() as b:
        os.kill(b.pid, signal.SIGSTOP)  # it cannot act on SIGTERM
        with pytest.warns(UserWarning, match="did not stop within 1 s") as caught:
            assert b.stop(timeout=1) == -signal.SIGKILL
        assert "started in" in str(caught[0].message)  # the end of the broker's log
        assert not b.is_alive()
