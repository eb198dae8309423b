"""Progress of long CLI work: a live bar on a terminal, plain lines elsewhere.

    with Progress("Producing", total=1_000_000, unit="records") as progress:
        for ...:
            progress.advance()

On a terminal (stderr is a TTY) a `rich` progress bar is drawn on stderr, so a tool's own
output on stdout (records, Kafka's summary lines) stays exactly as Kafka prints it, even when
stdout is piped. Off a terminal, `plain_every` seconds > 0 prints one line to stderr at that
interval ("Producing: 5000/100000 records (5%)"); 0 prints nothing, for tools whose stdout
lines already say how far they are (the perf tools' windows). `rich` is imported only when a
bar is drawn: plain runs and `strom server` never load it.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Self


class Progress:
    def __init__(self, description: str, total: int | None = None, *, unit: str = "",
                 stream: IO[str] | None = None, plain_every: float = 0.0,
                 interactive: bool | None = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.plain_every = plain_every
        self.done = 0
        if interactive is None:
            interactive = _is_terminal(self.stream)
        self.interactive = interactive
        self._bar = None
        self._task = None
        self._last_plain = time.monotonic()

    def __enter__(self) -> Self:
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn(self.unit), TaskProgressColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.plain_every > 0:
            now = time.monotonic()
            if now - self._last_plain >= self.plain_every:
                self._last_plain = now
                print(self.status(), file=self.stream, flush=True)

    def status(self) -> str:
        """"Recovering segments: 3/12 (25%)"."""
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            return (f"{self.description}: {self.done}/{self.total}{unit} "
                    f"({100 * self.done // self.total}%)")
        return f"{self.description}: {self.done}{unit}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
