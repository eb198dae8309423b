"""A cleaner thread's child process: the heavy half of a cleaning round, off the broker's GIL.

Building the key map and copying the retained records into `.cleaned` files is CPU work in
Python; done in a thread of the broker it takes the GIL from the event loop, and produce and
fetch latency suffer for the length of a round. So each cleaner thread (cleaner_manager.py)
hands its rounds to one `CleanerWorker`: a fresh interpreter running this module
(`python -m strom.log.cleaner_worker`, so nothing of the broker's state, locks or sockets is
inherited, and no program's main module is imported again, as multiprocessing's spawn
would), niced by `WORKER_NICENESS`, that runs `Cleaner.clean` (cleaner.py) exactly as the
thread would.

The thread and its worker talk over a socket pair (multiprocessing Connections: pickled
messages), one round at a time:

    thread -> worker   ("clean", request, map memory, IO rate, now)   the request carries paths,
                                                                       sizes and offsets only
    worker -> thread   ("swap", base offsets of the group, base)       a group's .cleaned files
                                                                       are written and fsynced
    thread -> worker   ("swapped", True | False | None)               the owner swapped them (or
                                                                       refused; None: it failed)
    worker -> thread   ("done", CleanResult) | ("error", exception)

so the swap itself (`.cleaned` -> `.swap` -> final names, on the event loop), and with it
crash safety and the cleaner checkpoint, stay with the broker as before; the worker only
reads segment files and writes `.cleaned` ones. `now` comes from the broker's clock, so a
round's delete horizons are the broker's. The IO throttle runs in the worker, at the rate
given with each round (the cleaner threads' share of log.cleaner.io.max.bytes.per.second).

Stopping: the thread writes a byte to a stop pipe, which the worker checks between batches
(and which cuts its throttle sleeps): the round ends with CleanerAborted and its `.cleaned`
files removed. A worker whose broker is gone (the stop pipe closed, another parent) exits
there and then, and an idle one when its connection closes. A worker that dies mid-round fails that round (the thread starts a new worker for the
next one); a `.cleaned` file it left is removed by the next round of that log, or by log
recovery at start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from strom.clock import ManualClock
from strom.log.cleaner import (
    Cleaner,
    CleanerAborted,
    CleanRequest,
    CleanResult,
    SegmentInfo,
    SwapFn,
    Throttler,
)

log = logging.getLogger(__name__)

WORKER_NICENESS = 10  # added to the broker's niceness: the event loop comes first
POLL_S = 0.2  # how often a waiting thread looks at its stop event
STOP_TIMEOUT_S = 10.0


class CleanerWorkerDied(RuntimeError):
    """The worker process ended in the middle of a round."""


class _Stop:
    """The worker's stop signal: the stop pipe is readable (a byte written, or its end
    closed). When the broker is gone the worker exits at once, leaving its files as they
    are: the broker's next start removes `.cleaned` files in its recovery, and a worker
    that tidied up after that could remove a new round's files of the same name."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.parent = os.getppid()

    def _stopped(self, ready: list) -> bool:
        if ready and os.getppid() != self.parent:
            os._exit(1)
        return bool(ready)

    def is_set(self) -> bool:
        return self._stopped(select.select([self.fd], [], [], 0)[0])

    def wait(self, timeout: float) -> bool:
        return self._stopped(select.select([self.fd], [], [], max(timeout, 0))[0])


def _portable(req: CleanRequest) -> CleanRequest:
    """The request without its live objects (the PartitionLog and LogSegments)."""
    return dataclasses.replace(
        req, log=None,
        segments=tuple(dataclasses.replace(s, segment=None) for s in req.segments))


def main(argv: list[str]) -> int:
    """The worker process: `python -m strom.log.cleaner_worker <connection fd> <stop fd>`."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] %(levelname)s %(message)s (%(name)s)")
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    conn = Connection(int(argv[0]))
    stop = _Stop(int(argv[1]))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0  # the broker closed the connection (or is gone)
        if message is None:
            return 0
        _kind, req, map_memory, io_rate, now_ms = message
        try:
            reply: tuple = ("done", _clean(conn, req, map_memory, io_rate, now_ms, stop))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the broker
            reply = ("error", e)
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return 0
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(repr(reply[1]))))


def _clean(conn: Any, req: CleanRequest, map_memory: int, io_rate: float, now_ms: int,
           stop: _Stop) -> CleanResult:
    def swap(_req: CleanRequest, group: list[SegmentInfo], base: int) -> bool:
        conn.send(("swap", [s.base_offset for s in group], base))
        kind, swapped = conn.recv()
        if swapped is None:
            raise CleanerAborted("the broker failed to swap the cleaned segment")
        return swapped

    throttler = Throttler(io_rate, stop.wait)
    return Cleaner(ManualClock(now_ms), map_memory, throttler, stop).clean(req, swap)


class CleanerWorker:
    """One worker process, started on first use (the first round) and again after it
    dies. Used by one cleaner thread at a time."""

    def __init__(self, name: str, stop: threading.Event) -> None:
        self.name = name
        self.stop = stop  # the cleaner manager's (threads)
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._stop_w = -1  # the write end of the worker's stop pipe
        self._stopped = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._discard()
        ours, theirs = socket.socketpair()
        stop_r, stop_w = os.pipe()
        env = dict(os.environ)
        # the strom this broker runs, whatever the child's sys.path would find first
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "strom.log.cleaner_worker", str(theirs.fileno()),
                 str(stop_r)],
                pass_fds=(theirs.fileno(), stop_r), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            ours.close()
            os.close(stop_w)
            raise
        finally:
            theirs.close()
            os.close(stop_r)
        self._process, self._conn, self._stop_w = process, Connection(ours.detach()), stop_w
        self._stopped = False
        log.info("Started log cleaner worker process %s (pid %d)", self.name, process.pid)

    def clean(self, req: CleanRequest, swap: SwapFn, map_memory: int, io_rate: float,
              now_ms: int) -> CleanResult:
        """Run `req` in the worker; `swap` is called here, in the calling thread. The
        worker's own exceptions (CleanerAborted, an OSError such as ENOSPC, a corrupt
        batch) are raised here as they were there; CleanerWorkerDied if it ended."""
        self.start()
        by_base = {s.base_offset: s for s in req.segments}
        self._pass_stop()
        self._send(("clean", _portable(req), map_memory, io_rate, now_ms))
        while True:
            message = self._receive()
            if message[0] == "done":
                return message[1]
            if message[0] == "error":
                raise message[1]
            _kind, bases, base = message  # "swap"
            try:
                swapped = swap(req, [by_base[b] for b in bases], base)
            except BaseException:
                self._send(("swapped", None))  # the worker discards its files
                self._receive()
                raise
            self._pass_stop()  # before the next group: a stop asked for meanwhile
            self._send(("swapped", bool(swapped)))

    def _pass_stop(self) -> None:
        if self.stop.is_set() and not self._stopped and self._stop_w >= 0:
            self._stopped = True
            try:
                os.write(self._stop_w, b"s")
            except OSError:
                pass

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as e:
            self._died(e)

    def _receive(self) -> Any:
        try:
            while not self._conn.poll(POLL_S):
                self._pass_stop()
                if self._process.poll() is not None and not self._conn.poll(0):
                    raise EOFError(f"exit code {self._process.returncode}")
            return self._conn.recv()
        except (EOFError, OSError) as e:
            self._died(e)

    def _died(self, e: BaseException) -> NoReturn:
        self._discard()
        raise CleanerWorkerDied(f"log cleaner worker {self.name} ended: {e!r}") from None

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the worker (a round in progress is abandoned) and wait for it to exit."""
        self._discard(timeout)

    def _discard(self, timeout: float = STOP_TIMEOUT_S) -> None:
        conn, process, stop_w = self._conn, self._process, self._stop_w
        self._conn, self._process, self._stop_w = None, None, -1
        if stop_w >= 0:
            os.close(stop_w)  # the worker's stop pipe reads as stopped from now on
        if conn is not None:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
            conn.close()
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()  # our own child, by its handle
                process.wait(timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
