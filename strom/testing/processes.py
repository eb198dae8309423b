"""The registry of child processes and temp dirs shared by every harness (broker.py,
zookeeper.py), and the one way they end a process.

Every process a harness starts is `track`ed by PID and SIGKILLed by an `atexit` hook if it is
still running when the interpreter exits, so a failed test never leaves one behind; the same
hook removes the temp dirs (`keep_dir`) of harnesses that were never closed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Self

# PID -> Popen for every process a harness started and has not reaped yet.
_live: dict[int, subprocess.Popen] = {}
# temp dirs of harnesses not closed yet (removed at exit after the kill)
_tmp_dirs: set[Path] = set()
_live_lock = threading.Lock()
HOST = "127.0.0.1"


def track(proc: subprocess.Popen) -> None:
    """Kill `proc` at exit unless it is `untrack`ed before."""
    with _live_lock:
        _live[proc.pid] = proc


def untrack(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        with _live_lock:
            _live.pop(proc.pid, None)


def keep_dir(path: Path) -> None:
    """Remove `path` at exit unless `remove_dir` did before."""
    with _live_lock:
        _tmp_dirs.add(path)


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _live_lock:
        _tmp_dirs.discard(path)


def release_dir(path: Path) -> None:
    """Leave `path` in place at exit after all (kept for inspection)."""
    with _live_lock:
        _tmp_dirs.discard(path)


def end(proc: subprocess.Popen, sig: int, timeout: float) -> bool:
    """Send `sig` to `proc` if it is still running and wait up to `timeout` seconds for it to
    exit, then SIGKILL it (waiting up to 10 s more). True when it had to be killed."""
    if proc.poll() is not None:
        return False
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ChildProcess:
    """What the harnesses of one child process (BrokerProcess, ZooKeeperProcess) share: the
    process handle, `start()` with its retries on a taken port, and use as a context manager
    that starts the process unless it runs and closes the harness at the end. Subclasses give
    `_start_once()` (raising `start_error`), `_run_log()` and `close()`, and set `port`,
    `starts` and `_port_chosen`."""

    what = "process"  # for messages
    start_error: type[Exception] = RuntimeError
    _proc: subprocess.Popen | None = None
    port: int
    starts: int  # how many times it was started
    _port_chosen: bool  # the port was picked by the harness, not given

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the process and wait until it serves. On its first start, a port picked here
        that was taken meanwhile by someone else is replaced by another free one (at most 3
        tries); later starts keep the port, so clients can reconnect."""
        if self.is_alive():
            raise RuntimeError(f"{self.what} already running (pid {self.pid})")
        tries = 3 if (self._port_chosen and self.starts == 0) else 1
        for attempt in range(tries):
            try:
                self._start_once()
                return self
            except self.start_error:
                if "address already in use" not in self._run_log().lower() or \
                        attempt == tries - 1:
                    raise
                self.port = free_port()
        return self

    def _start_once(self) -> None:
        raise NotImplementedError

    def _run_log(self) -> str:
        """The output of the current run."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _reap(self) -> None:
        untrack(self._proc)

    def __enter__(self) -> Self:
        if not self.is_alive():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live.values())
        _live.clear()
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    with _live_lock:
        dirs = list(_tmp_dirs)
        _tmp_dirs.clear()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_kill_leftovers)

__all__ = ["ChildProcess", "end", "free_port", "keep_dir", "remove_dir", "track", "untrack"]
