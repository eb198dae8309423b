"""ControllerContext: the controller's office as the operations it runs see it.

Operator-asked leader elections and the preferred-leader rebalance (leadership.py) and
partition reassignment (reassignment.py) run on the active controller, but they depend only
on this small interface, never on the Controller class: the Controller implements it and
starts their loops, so imports point one way

    controller.py -> leadership.py, reassignment.py -> controller_context.py

and unit tests pass a fake office over an in-memory store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from strom.cluster import model
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import MetadataStore, StoreError
from strom.config import BrokerConfig

# change(current state) -> the state to write, or None to leave the partition as it is
StateChange = Callable[[model.PartitionState], model.PartitionState | None]


class ControllerContext(Protocol):
    """What elections and reassignments need from the active controller.

    `lock` is held across every read-modify-write of assignments and partition states the
    controller makes (re-elections after broker changes, elections, reassignment steps),
    so two of them never interleave on this broker.
    """

    store: MetadataStore  # the metadata store every write goes through
    cache: MetadataCache  # this broker's view of the metadata (may lag the store)
    config: BrokerConfig
    epoch: int  # the controller epoch, written into every partition state
    active: bool  # this broker is the controller now
    lock: asyncio.Lock

    def require_active(self) -> None:
        """Raise NotController unless this broker is the active controller."""

    def live_brokers(self) -> list[int]:
        """Registered brokers as the metadata cache knows them, less those found dead."""

    async def live_set(self) -> set[int]:
        """Registered brokers as the store knows them now, less those found dead."""

    async def update_state(self, name: str, p: int, change: StateChange
                           ) -> model.PartitionState | None:
        """Apply `change` to the partition's state with compare-and-set, fenced by the
        controller epoch (retried when another write got in between); the state written,
        or None when nothing was (no change, no state node, or it kept changing).
        NotController when a newer controller exists."""


async def run_periodically(controller: ControllerContext, what: str, log: logging.Logger,
                           interval_s: Callable[[], float],
                           step: Callable[[ControllerContext], Awaitable[object]],
                           enabled: Callable[[], object] = lambda: True) -> None:
    """The controller's periodic work (the preferred-leader rebalance, the reassignment
    check): every `interval_s()` seconds, while this broker is the active controller and
    `enabled()`, await `step(controller)`. A failure is logged to `log` ("<what> failed"; a
    store error as a warning, anything else with its traceback) and the next round runs
    as usual."""
    while True:
        await asyncio.sleep(interval_s())
        if not controller.active or not enabled():
            continue
        try:
            await step(controller)
        except StoreError as e:
            log.warning("%s failed: %s", what, e)
        except Exception:
            log.exception("%s failed", what)
