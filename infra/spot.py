"""Spot capacity: the market interface and dockyard's local, simulated market.

A market answers two questions about a job: is an interruption notice due
now, and how long until there is capacity. The local market answers from a
SpotSimulation (dockyard/spot.py) configured by DOCKYARD_SPOT_SIMULATION; a
provider for a real cloud implements the same Protocol.
"""

from __future__ import annotations

from typing import Protocol

from dockyard.errors import SpotInterruption
from dockyard.record import JobRecord, SpotEvent
from dockyard.settings import Settings
from dockyard.spot import SpotSimulation, capacity_wait, due_interruption, parse_simulation
from infra import job_log
from infra.job_store import now as store_now
from infra.job_store import open_store


class SpotMarket(Protocol):
    price_ratio: float
    notice_seconds: float

    def due(self, record: JobRecord, elapsed: float, checkpoints: int = 0) -> str | None:
        """The id of an interruption notice due now for this job, or None. `checkpoints`:
        checkpoint files its attempt has uploaded so far."""

    def capacity_in(self, record: JobRecord, elapsed: float) -> float:
        """Seconds until this job can get capacity (0: now)."""


class LocalSpotMarket:
    """A simulated market: interruptions and dry spells as configured."""

    def __init__(self, simulation: SpotSimulation) -> None:
        self.simulation = simulation
        self.price_ratio = simulation.price_ratio
        self.notice_seconds = simulation.notice_seconds

    def due(self, record: JobRecord, elapsed: float, checkpoints: int = 0) -> str | None:
        status = record.status.secondary.value if record.status.secondary else ""
        entered = record.status.transitions[-1].start_time if record.status.transitions else record.creation_time
        in_status = (store_now() - entered).total_seconds()
        fired = {e.event for e in record.spot_events}
        return due_interruption(self.simulation, elapsed, status, fired, in_status, checkpoints)

    def capacity_in(self, record: JobRecord, elapsed: float) -> float:  # noqa: ARG002 - same for every job
        return capacity_wait(self.simulation, elapsed)


def market(settings: Settings) -> LocalSpotMarket:
    """The market `settings` configure (no interruptions when unset).

    Raises:
        JobSpecError: the simulation setting does not parse.
    """
    return LocalSpotMarket(parse_simulation(settings.spot_simulation))


def elapsed(record: JobRecord) -> float:
    return (store_now() - record.creation_time).total_seconds()


def check(settings: Settings, name: str, checkpoints: int = 0) -> None:
    """Raise SpotInterruption when the market takes a spot job's capacity back now.
    `checkpoints`: checkpoint files the attempt has uploaded so far (while training).

    The interruption is recorded first, in one compare-and-set write, so each
    one happens once however many threads ask at the same moment.

    Raises:
        SpotInterruption: a notice is due; the caller must yield the instances.
    """
    store = open_store(settings)
    record = store.get(name)
    if not record.spec.enable_managed_spot_training:
        return
    spot = market(settings)
    event = spot.due(record, elapsed(record), checkpoints)
    if event is None:
        return
    first: list[bool] = []

    def add_event(current: JobRecord) -> JobRecord:
        first[:] = [all(e.event != event for e in current.spot_events)]
        if not first[0]:
            return current
        status = current.status.secondary.value if current.status.secondary else ""
        return current.model_copy(
            update={"spot_events": (*current.spot_events, SpotEvent(event=event, at=store_now(), status=status))}
        )

    record = store.change(name, add_event)
    if not first[0]:
        return  # another thread met this interruption first and yields the instances
    status = record.spot_events[-1].status
    job_log.append(
        settings.home,
        name,
        f"spot: interruption notice ({event}) during {status}; "
        f"{spot.notice_seconds:g} s until the capacity is reclaimed",
    )
    raise SpotInterruption(event, spot.notice_seconds)
