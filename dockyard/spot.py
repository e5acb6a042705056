"""Managed spot training, the pure part: the simulated market and the bill.

A spot market decides when capacity is taken back (after a notice period) and
when there is none to be had. dockyard's local market is configured outside
the job spec — a real market has no such knob — by DOCKYARD_SPOT_SIMULATION
or `--spot-simulation`, e.g.

    interrupt_at=20,45; notice=2; no_capacity=50-70; rate=3/h; seed=7; on=Uploading; price=0.3

- interrupt_at: seconds after the job was created
- checkpoints: counts of checkpoint uploads; once an attempt's checkpoint sync has
      uploaded that many files, the job is interrupted (each count once per job, so
      checkpoints=1 interrupts right after the first checkpoint reached its location)
- on: secondary statuses; the first time the job enters each, it is interrupted;
      STATUS+SECONDS: once the job has been in STATUS that long (each such entry
      once, so on=Training+3,Training+5 interrupts two stretches of training)
- rate, seed: random interruptions, a seeded Poisson process (per hour)
- notice: seconds between the notice and the reclaim (default 120)
- no_capacity: windows START-END (seconds after creation) with no capacity
- price: spot price as a fraction of on-demand (default 0.3)
"""

from __future__ import annotations

import functools
import math
import random
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from dockyard.errors import JobSpecError

RANDOM_HORIZON_SECONDS = 7 * 86400


class SpotSimulation(BaseModel):
    model_config = ConfigDict(frozen=True)

    interrupt_at: tuple[float, ...] = ()
    interrupt_on: tuple[str, ...] = ()
    interrupt_in: tuple[tuple[str, float], ...] = ()  # (status, seconds in it)
    interrupt_after_checkpoints: tuple[int, ...] = ()  # checkpoint files uploaded in the attempt
    rate_per_hour: float = Field(default=0.0, ge=0)
    seed: int = 0
    notice_seconds: float = Field(default=120.0, ge=0)
    no_capacity: tuple[tuple[float, float], ...] = ()
    price_ratio: float = Field(default=0.3, gt=0, le=1)


def parse_simulation(text: str) -> SpotSimulation:
    """Parse `key=value; ...` (see the module docstring).

    Raises:
        JobSpecError: an unknown key or a value that does not parse.
    """
    fields: dict[str, object] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, _, value = (s.strip() for s in part.partition("="))
        try:
            if key == "interrupt_at":
                fields["interrupt_at"] = tuple(float(v) for v in value.split(",") if v.strip())
            elif key == "on":
                entries = [v.strip() for v in value.split(",") if v.strip()]
                fields["interrupt_on"] = tuple(e for e in entries if "+" not in e)
                fields["interrupt_in"] = tuple(
                    (status.strip(), float(after))
                    for status, _, after in (e.partition("+") for e in entries if "+" in e)
                )
            elif key == "checkpoints":
                fields["interrupt_after_checkpoints"] = tuple(int(v) for v in value.split(",") if v.strip())
            elif key == "rate":
                fields["rate_per_hour"] = float(value.removesuffix("/h"))
            elif key == "seed":
                fields["seed"] = int(value)
            elif key == "notice":
                fields["notice_seconds"] = float(value)
            elif key == "price":
                fields["price_ratio"] = float(value)
            elif key == "no_capacity":
                windows = []
                for window in value.split(","):
                    start, _, end = window.partition("-")
                    windows.append((float(start), float(end)))
                fields["no_capacity"] = tuple(windows)
            else:
                raise JobSpecError(
                    f"spot simulation: unknown key '{key}' — use interrupt_at, on, checkpoints, rate, seed, "
                    "notice, no_capacity or price"
                )
        except ValueError:
            raise JobSpecError(
                f"spot simulation: cannot read {key}='{value}' — see the README's spot section"
            ) from None
    return SpotSimulation.model_validate(fields)


@functools.lru_cache(maxsize=16)
def interruption_times(sim: SpotSimulation) -> list[tuple[str, float]]:
    """Every timed interruption as (event id, seconds after creation), sorted. Computed once
    per simulation: a high rate makes many thousands of them over the horizon."""
    events = [(f"at-{t:g}", t) for t in sim.interrupt_at]
    if sim.rate_per_hour > 0:
        rng = random.Random(sim.seed)
        t, k = 0.0, 0
        while True:
            t += rng.expovariate(sim.rate_per_hour / 3600)
            if t > RANDOM_HORIZON_SECONDS:
                break
            k += 1
            events.append((f"random-{k}", t))
    return sorted(events, key=lambda e: e[1])


def due_interruption(
    sim: SpotSimulation, elapsed: float, status: str, fired: set[str], in_status: float = 0.0, checkpoints: int = 0
) -> str | None:
    """The id of an interruption that is due now and has not fired yet, or None.
    `elapsed`: seconds since the job was created; `in_status`: since it entered `status`;
    `checkpoints`: checkpoint files the attempt has uploaded so far."""
    if status in sim.interrupt_on and f"on-{status}" not in fired:
        return f"on-{status}"
    for count in sim.interrupt_after_checkpoints:
        event = f"checkpoints-{count}"
        if checkpoints >= count and event not in fired:
            return event
    for name, after in sim.interrupt_in:
        event = f"on-{name}+{after:g}"
        if name == status and in_status >= after and event not in fired:
            return event
    for event, at in interruption_times(sim):
        if at > elapsed:
            break
        if event not in fired:
            return event
    return None


def capacity_wait(sim: SpotSimulation, elapsed: float) -> float:
    """Seconds from `elapsed` until capacity is there (0: it is there now)."""
    end = elapsed
    changed = True
    while changed:
        changed = False
        for start, stop in sim.no_capacity:
            if start <= end < stop:
                end, changed = stop, True
    return end - elapsed


class Attempt(BaseModel):
    """One stretch of instances running for a job, from provisioning to reclaim or end."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime | None = None
    ended_by: str = ""  # interruption id, "infrastructure fault", or "" for the last


def running_seconds(attempts: tuple[Attempt, ...], now: datetime) -> float:
    return sum(((a.end or now) - a.start).total_seconds() for a in attempts)


def billable_seconds(attempts: tuple[Attempt, ...], price_ratio: float, now: datetime) -> int:
    """Seconds billed at on-demand rates: spot running time scaled by the spot price."""
    return max(1, math.ceil(running_seconds(attempts, now) * price_ratio))
