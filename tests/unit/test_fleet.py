"""Placement, pure: where a job's instances fit in the fleet, and why not when they do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dockyard.fleet import Demand, Grant, Host, Shortfall, place
from dockyard.instances import INSTANCE_TYPES

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GIB = 1024**3


def host(name: str, vcpus: int = 8, gib: int = 32, gpus: int = 0, **fields: object) -> Host:
    return Host(name=name, vcpus=vcpus, memory_bytes=gib * GIB, gpus=gpus, heartbeat_at=AT, **fields)  # type: ignore[arg-type]


def demand(job: str, itype: str, count: int = 1) -> Demand:
    return Demand(
        job_name=job, instance_type=INSTANCE_TYPES[itype], instances=tuple(f"algo-{i + 1}" for i in range(count))
    )


def test_gpus_are_never_granted_twice_and_the_shortfall_says_what_is_free() -> None:
    fleet = [host("a", gpus=2), host("b", gpus=1)]
    first = place(demand("j1", "ml.g5.xlarge", 2), fleet, [], AT)
    assert isinstance(first, list)
    second = place(demand("j2", "ml.g5.xlarge"), fleet, first, AT)
    assert isinstance(second, list)
    taken = [(g.host, i) for g in first + second for i in g.gpu_ids]
    assert len(taken) == len(set(taken)) == 3
    third = place(demand("j3", "ml.g5.xlarge", 2), fleet, first + second, AT)
    assert isinstance(third, Shortfall) and not third.never
    assert third.message.startswith("waiting for 2 x ml.g5.xlarge: 0 GPUs, ")
    assert third.message.endswith("free in the fleet")


def test_instances_spread_over_the_hosts_and_vcpus_add_up_within_each() -> None:
    fleet = [host("a", vcpus=8), host("b", vcpus=8)]
    grants = place(demand("j", "ml.m5.xlarge", 4), fleet, [], AT)  # 4 vCPUs each
    assert isinstance(grants, list)
    assert sorted(g.host for g in grants) == ["a", "a", "b", "b"]
    assert isinstance(place(demand("k", "ml.m5.large"), fleet, grants, AT), Shortfall)


def test_an_instance_larger_than_its_host_takes_the_whole_host_as_provisioning_caps_it() -> None:
    fleet = [host("small", vcpus=2, gib=4)]
    grants = place(demand("j", "ml.m5.4xlarge"), fleet, [], AT)
    assert isinstance(grants, list) and grants[0].vcpus == 2 and grants[0].memory_bytes == 4 * GIB
    assert isinstance(place(demand("k", "ml.t3.medium"), fleet, grants, AT), Shortfall)


def test_too_many_gpus_for_any_host_is_said_at_once_not_waited_for() -> None:
    shortfall = place(demand("j", "ml.p4d.24xlarge"), [host("a", gpus=1)], [], AT)
    assert isinstance(shortfall, Shortfall) and shortfall.never
    assert "need 8 GPU(s) each" in shortfall.message and "the most GPUs on one: 1" in shortfall.message
    fleet = [host("a", gpus=4), host("b", gpus=1)]
    held = place(demand("small", "ml.g5.xlarge"), fleet, [], AT)
    assert isinstance(held, list)
    # Two 4-GPU instances need two 4-GPU hosts: never, whatever is released.
    pair = place(demand("pair", "ml.g5.12xlarge", 2), fleet, held, AT)
    assert isinstance(pair, Shortfall) and pair.never


def test_draining_silent_and_other_hosts_take_nothing() -> None:
    silent = host("silent").model_copy(update={"heartbeat_at": AT - timedelta(minutes=5)})
    draining = host("draining", draining=True)
    shortfall = place(demand("j", "ml.m5.large"), [silent, draining], [], AT)
    assert isinstance(shortfall, Shortfall) and "no live host in the fleet" in shortfall.message
    grants = place(demand("j", "ml.m5.large"), [host("a"), host("b", vcpus=64)], [], AT, only="a")
    assert isinstance(grants, list) and grants[0].host == "a"


def test_local_types_take_no_vcpus_and_local_gpu_takes_every_gpu() -> None:
    fleet = [host("a", vcpus=2, gpus=2)]
    cpu = place(demand("j", "local", 3), fleet, [], AT)
    assert isinstance(cpu, list) and all(g.vcpus == 0 and g.gpu_ids == () for g in cpu)
    gpu = place(demand("k", "local_gpu"), fleet, [], AT)
    assert isinstance(gpu, list) and gpu[0].gpu_ids == (0, 1)
    assert isinstance(place(demand("l", "ml.g5.xlarge"), fleet, [*gpu], AT), Shortfall)


def test_grants_of_hosts_no_longer_listed_are_ignored() -> None:
    gone = Grant(job_name="old", instance="algo-1", host="gone", vcpus=8, memory_bytes=0, gpu_ids=(0,))
    assert isinstance(place(demand("j", "ml.m5.2xlarge"), [host("a")], [gone], AT), list)


def test_together_puts_every_instance_on_one_host_the_emptiest_first_then_the_preferred() -> None:
    fleet = [host("a", vcpus=8), host("b", vcpus=8), host("c", vcpus=16, gib=64)]
    held = place(demand("busy", "ml.m5.xlarge"), fleet, [], AT, only="c")  # c: 12 of 16 left
    assert isinstance(held, list)
    pair = place(demand("j", "ml.m5.xlarge", 2), fleet, held, AT, together=True, prefer="b")
    assert isinstance(pair, list) and {g.host for g in pair} == {"b"}
    three = place(demand("k", "ml.m5.xlarge", 3), fleet, held, AT, together=True)
    assert isinstance(three, list) and {g.host for g in three} == {"c"}
    assert isinstance(place(demand("l", "ml.m5.xlarge", 4), fleet, held, AT, together=True), Shortfall)
