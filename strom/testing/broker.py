"""A real strom broker in a child process, for integration tests.

`BrokerProcess` starts `python -m strom server` exactly as a user would, with Kafka's config
names given as `--override key=value`:

    with BrokerProcess(overrides={"auto.create.topics.enable": "false"}) as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        ...

- It picks a free 127.0.0.1 port once and keeps it across restarts, so clients that are still
  open reconnect to the restarted broker.
- Data goes to a temporary log dir (removed on `close()`), or to `log_dir=` when a test wants
  to restart on the same data with a second `BrokerProcess`.
- stdout and stderr go to `broker.log` in the harness's own temp dir; every start appends a
  marker line, and `log_text()` returns everything (or only the current run).
- `start()` waits, bounded by `startup_timeout`, until the port accepts TCP connections on a
  socket the broker process itself holds (checked in /proc, so another program on the port
  is never taken for it), and raises `BrokerStartError` with the broker's log when the
  process exits or the deadline passes.
- `argv_template=` runs another command instead (e.g. a peer broker, to tell a test's
  mistake from the broker's), with `{host}`, `{port}`, `{bootstrap}`, `{log_dir}` filled in.
- `stop()` is SIGTERM then SIGKILL after `stop_timeout` (with a warning that shows the end
  of the broker's log, so a slow shutdown is seen even in a passing test); `kill()` is
  SIGKILL (crash tests);
  `restart()` is stop (or kill) then start on the same port and data.

Every process this module starts is tracked by PID and SIGKILLed by an `atexit` hook if it is
still running when the interpreter exits, so a failed test never leaves a broker behind; the
same hook removes the temp dirs of brokers that were never closed (strom.testing.processes).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from strom.testing.processes import HOST, ChildProcess, end, free_port, keep_dir, remove_dir, track

__all__ = ["BrokerProcess", "BrokerStartError", "free_port"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_START_MARKER = "=== strom.testing: start #"


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on 127.0.0.1/0.0.0.0:`port` (Linux /proc), or None when
    /proc cannot tell."""
    found: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # LISTEN
                    found.add(inode)
    except (OSError, ValueError, IndexError):
        return None
    return found


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds the listening socket on `port`, so that another
    program that happens to own the port is never mistaken for our broker. True when the
    platform cannot tell (no /proc)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return True
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


class BrokerStartError(RuntimeError):
    """The broker process exited or did not listen in time; the message holds its log."""


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class BrokerProcess(ChildProcess):
    """One strom broker process; see the module docstring."""

    what = "broker"
    start_error = BrokerStartError

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        overrides: dict[str, object] | None = None,
        *,
        node_id: int = 1,
        port: int | None = None,
        config_file: str | os.PathLike | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        argv_template: list[str] | None = None,
    ) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="strom-test-"))
        keep_dir(self._tmp)
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir is not None else self._tmp / "data"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._tmp / "broker.log"
        self.node_id = node_id
        self._port_chosen = port is None
        self.port = port if port is not None else free_port()
        self.config_file = Path(config_file) if config_file is not None else None
        self.overrides: dict[str, str] = {k: str(v) for k, v in (overrides or {}).items()}
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.argv_template = argv_template
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0  # where the current run's log begins

    # -- addresses and state ---------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        """The port of `metrics.listener` when the overrides set one."""
        listener = self.overrides.get("metrics.listener")
        return int(listener.rsplit(":", 1)[1]) if listener else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def command(self) -> list[str]:
        """The exact command line `start()` runs.

        With `argv_template` (for running the same tests against a peer broker), that list is
        used instead, with `{host}`, `{port}`, `{bootstrap}` and `{log_dir}` filled in."""
        if self.argv_template is not None:
            values = {"host": HOST, "port": self.port, "bootstrap": self.bootstrap,
                      "log_dir": self.log_dir}
            return [arg.format(**values) for arg in self.argv_template]
        cmd = [sys.executable, "-m", "strom", "server"]
        if self.config_file is not None:
            cmd.append(str(self.config_file))
        settings = {
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": str(self.log_dir),
        }
        settings.update(self.overrides)
        for key, value in settings.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def log_text(self, current_run_only: bool = False) -> str:
        """What the broker wrote to stdout/stderr (all runs, or only the current one)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        if current_run_only:
            data = data[self._log_offset:]
        return data.decode("utf-8", errors="replace")

    # -- lifecycle -------------------------------------------------------------------------

    def _run_log(self) -> str:
        return self.log_text(current_run_only=True)

    def _start_once(self) -> None:
        self.starts += 1
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"{_START_MARKER}{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self._tmp),
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not us
            )
        self._proc = proc
        track(proc)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap()
                raise BrokerStartError(
                    f"broker exited with code {code} before listening on {self.bootstrap}; "
                    f"log:\n{self.log_text(current_run_only=True)}"
                )
            if _port_open(self.port) and _listens(self._proc.pid, self.port):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise BrokerStartError(
                    f"broker did not listen on {self.bootstrap} within "
                    f"{self.startup_timeout:.0f}s; log:\n{self.log_text(current_run_only=True)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to `timeout` (default `stop_timeout`), then SIGKILL. Returns the
        exit code (negative for a signal), or None when nothing was running."""
        return self._end(signal.SIGTERM, self.stop_timeout if timeout is None else timeout)

    def kill(self) -> int | None:
        """SIGKILL (a crash: nothing is flushed or checkpointed)."""
        return self._end(signal.SIGKILL, 10)

    def _end(self, sig: int, timeout: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if end(proc, sig, timeout) and sig != signal.SIGKILL:
            # a broker that does not finish its shutdown is worth knowing about even when
            # the test passes: pytest lists the warning, with the end of the broker's log
            tail = "\n".join(self.log_text(current_run_only=True).splitlines()[-15:])
            warnings.warn(f"broker {self.bootstrap} did not stop within {timeout:.0f} s of "
                          f"signal {sig} and was killed; the end of its log:\n{tail}",
                          stacklevel=3)
        self._reap()
        return proc.returncode

    def restart(self, *, crash: bool = False) -> BrokerProcess:
        """Stop (SIGTERM, or SIGKILL when `crash`) and start again on the same port and data."""
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker and remove the harness's temp dir (with the log dir when it is
        ours; a `log_dir=` given by the caller is left alone)."""
        self.stop()
        remove_dir(self._tmp)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_alive() else f"exit {self.returncode}"
        return f"<BrokerProcess {self.bootstrap} {state} log_dir={self.log_dir}>"
