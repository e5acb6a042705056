import itertools
from datetime import UTC, datetime, timedelta

import pytest

from dockyard.errors import JobSpecError
from dockyard.spot import (
    Attempt,
    billable_seconds,
    capacity_wait,
    due_interruption,
    interruption_times,
    parse_simulation,
    running_seconds,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_parse_simulation() -> None:
    sim = parse_simulation(
        "interrupt_at=20,45; notice=2; no_capacity=50-70,80-90; rate=3/h; seed=7; on=Uploading; price=0.4"
    )
    assert sim.interrupt_at == (20, 45) and sim.notice_seconds == 2 and sim.price_ratio == 0.4
    assert sim.no_capacity == ((50, 70), (80, 90)) and sim.interrupt_on == ("Uploading",)
    assert parse_simulation("").notice_seconds == 120
    with pytest.raises(JobSpecError, match="unknown key 'interupt_at'"):
        parse_simulation("interupt_at=3")
    with pytest.raises(JobSpecError, match="cannot read notice='soon'"):
        parse_simulation("notice=soon")


def test_interruptions_fire_once_each_in_order() -> None:
    sim = parse_simulation("interrupt_at=5,10; on=Uploading")
    assert due_interruption(sim, 4, "Training", set()) is None
    assert due_interruption(sim, 6, "Training", set()) == "at-5"
    assert due_interruption(sim, 11, "Training", {"at-5"}) == "at-10"
    assert due_interruption(sim, 11, "Training", {"at-5", "at-10"}) is None
    assert due_interruption(sim, 1, "Uploading", set()) == "on-Uploading"
    assert due_interruption(sim, 1, "Uploading", {"on-Uploading"}) is None
    timed = parse_simulation("on=Training+2,Training+3.5")
    assert timed.interrupt_in == (("Training", 2.0), ("Training", 3.5)) and timed.interrupt_on == ()
    assert due_interruption(timed, 99, "Training", set(), in_status=1.9) is None
    assert due_interruption(timed, 99, "Downloading", set(), in_status=9) is None
    assert due_interruption(timed, 99, "Training", set(), in_status=2.1) == "on-Training+2"
    assert due_interruption(timed, 99, "Training", {"on-Training+2"}, in_status=2.1) is None  # the next stretch
    assert due_interruption(timed, 99, "Training", {"on-Training+2"}, in_status=3.6) == "on-Training+3.5"
    counted = parse_simulation("checkpoints=1,3")
    assert counted.interrupt_after_checkpoints == (1, 3)
    assert due_interruption(counted, 99, "Training", set(), checkpoints=0) is None
    assert due_interruption(counted, 99, "Training", set(), checkpoints=2) == "checkpoints-1"
    assert due_interruption(counted, 99, "Training", {"checkpoints-1"}, checkpoints=2) is None  # the next attempt
    assert due_interruption(counted, 99, "Training", {"checkpoints-1"}, checkpoints=3) == "checkpoints-3"


def test_random_interruptions_repeat_by_seed() -> None:
    a = interruption_times(parse_simulation("rate=60/h; seed=1"))
    assert a == interruption_times(parse_simulation("rate=60/h; seed=1"))
    assert a != interruption_times(parse_simulation("rate=60/h; seed=2"))
    gaps = [later[1] - earlier[1] for earlier, later in itertools.pairwise(a)]
    assert 40 < sum(gaps) / len(gaps) < 80  # about one a minute


def test_capacity_wait_spans_touching_windows() -> None:
    sim = parse_simulation("no_capacity=10-20,20-30,50-60")
    assert capacity_wait(sim, 5) == 0
    assert capacity_wait(sim, 12) == 18
    assert capacity_wait(sim, 55) == 5


def test_billable_seconds_scale_running_time_by_the_spot_price() -> None:
    attempts = (
        Attempt(start=T0, end=T0 + timedelta(seconds=100), ended_by="at-100"),
        Attempt(start=T0 + timedelta(seconds=160), end=T0 + timedelta(seconds=260)),
    )
    assert running_seconds(attempts, T0) == 200
    assert billable_seconds(attempts, 0.3, T0) == 60
