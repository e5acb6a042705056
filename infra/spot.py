"""Spot capacity: the market interface and dockyard's local, simulated market.

A market answers two questions about a job: is an interruption notice due
now, and how long until there is capacity. The local market answers from a
SpotSimulation (dockyard/spot.py) configured by DOCKYARD_SPOT_SIMULATION; a
provider for a real cloud implements the same Protocol.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from dockyard.errors import SpotInterruption
from dockyard.record import JobRecord, SpotEvent
from dockyard.spot import SpotSimulation, capacity_wait, due_interruption, parse_simulation
from infra import records

ENV = "DOCKYARD_SPOT_SIMULATION"


class SpotMarket(Protocol):
    price_ratio: float
    notice_seconds: float

    def due(self, record: JobRecord, elapsed: float) -> str | None:
        """The id of an interruption notice due now for this job, or None."""

    def capacity_in(self, record: JobRecord, elapsed: float) -> float:
        """Seconds until this job can get capacity (0: now)."""


class LocalSpotMarket:
    """A simulated market: interruptions and dry spells as configured."""

    def __init__(self, simulation: SpotSimulation) -> None:
        self.simulation = simulation
        self.price_ratio = simulation.price_ratio
        self.notice_seconds = simulation.notice_seconds

    def due(self, record: JobRecord, elapsed: float) -> str | None:
        status = record.status.secondary.value if record.status.secondary else ""
        return due_interruption(self.simulation, elapsed, status, {e.event for e in record.spot_events})

    def capacity_in(self, record: JobRecord, elapsed: float) -> float:  # noqa: ARG002 - same for every job
        return capacity_wait(self.simulation, elapsed)


def market(environ: Mapping[str, str] | None = None) -> LocalSpotMarket:
    """The market configured for this process (no interruptions when unset).

    Raises:
        JobSpecError: the simulation setting does not parse.
    """
    return LocalSpotMarket(parse_simulation((environ or os.environ).get(ENV, "")))


def elapsed(record: JobRecord) -> float:
    return (records.now() - record.creation_time).total_seconds()


def check(home: str, name: str) -> None:
    """Raise SpotInterruption when the market takes a spot job's capacity back now.

    The interruption is recorded first, so each one happens once.

    Raises:
        SpotInterruption: a notice is due; the caller must yield the instances.
    """
    record = records.load(home, name)
    if not record.spec.enable_managed_spot_training:
        return
    spot = market()
    event = spot.due(record, elapsed(record))
    if event is None:
        return
    status = record.status.secondary.value if record.status.secondary else ""
    records.update(
        home, name, spot_events=(*record.spot_events, SpotEvent(event=event, at=records.now(), status=status))
    )
    records.append_log(
        home,
        name,
        f"spot: interruption notice ({event}) during {status}; "
        f"{spot.notice_seconds:g} s until the capacity is reclaimed",
    )
    raise SpotInterruption(event, spot.notice_seconds)
