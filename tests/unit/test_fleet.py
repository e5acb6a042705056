"""Placement, pure: where a job's instances fit in the fleet, and why not when they do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dockyard.fleet import Demand, Grant, Host, Shortfall, place
from dockyard.instances import INSTANCE_TYPES

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GIB = 1024**3


def host(name: str, vcpus: int = 8, gib: int = 32, gpus: int = 0, **fields: object) -> Host:
    fields.setdefault("address", f"10.0.0.{sum(map(ord, name)) % 250 + 1}")
    return Host(name=name, vcpus=vcpus, memory_bytes=gib * GIB, gpus=gpus, heartbeat_at=AT, **fields)  # type: ignore[arg-type]


def demand(job: str, itype: str, count: int = 1) -> Demand:
    return Demand(
        job_name=job, instance_type=INSTANCE_TYPES[itype], instances=tuple(f"algo-{i + 1}" for i in range(count))
    )


def test_gpus_are_never_granted_twice_and_the_shortfall_says_what_is_free() -> None:
    fleet = [host("a", gpus=2), host("b", gpus=1)]
    first = place(demand("j1", "ml.g5.xlarge", 2), fleet, [], AT)
    assert isinstance(first, list) and {g.host for g in first} == {"a"}
    second = place(demand("j2", "ml.g5.xlarge"), fleet, first, AT)
    assert isinstance(second, list) and second[0].host == "b"
    taken = [(g.host, i) for g in first + second for i in g.gpu_ids]
    assert len(taken) == len(set(taken)) == 3
    third = place(demand("j3", "ml.g5.xlarge", 2), fleet, first + second, AT)
    assert isinstance(third, Shortfall) and not third.never
    assert third.message.startswith("waiting for 2 x ml.g5.xlarge: 0 GPUs, ")
    assert third.message.endswith("free in the fleet")


def test_instances_get_their_type_in_full_on_one_host_else_spread_and_capped_only_if_never_in_full() -> None:
    fleet = [host("a", vcpus=8), host("b", vcpus=8)]
    pair = place(demand("p", "ml.m5.xlarge", 2), fleet, [], AT)  # 2 x 4 vCPUs: one host holds both
    assert isinstance(pair, list) and [(g.host, g.vcpus) for g in pair] == [("a", 4), ("a", 4)]
    across = place(demand("k", "ml.m5.2xlarge", 2), fleet, [], AT)  # 2 x 8 vCPUs: one on each host
    assert isinstance(across, list) and [(g.host, g.vcpus) for g in across] == [("a", 8), ("b", 8)]
    # The fleet can give the type in full, so a job waits for that rather than run capped.
    trial = place(demand("t", "ml.m5.large"), fleet, across, AT)
    assert isinstance(trial, Shortfall) and not trial.never and "0 vCPUs" in trial.message
    # 4 x 4 vCPUs: no host holds all four and there are not four hosts, so capped on one, as on one machine.
    four = place(demand("j", "ml.m5.xlarge", 4), fleet, [], AT)
    assert isinstance(four, list) and {g.host for g in four} == {"a"} and [g.vcpus for g in four] == [2] * 4
    # A network-isolated job's instances share one host's network: capped there, as on one machine.
    isolated = Demand(**(demand("i", "ml.m5.2xlarge", 2).model_dump() | {"spreads": False}))
    capped = place(isolated, fleet, [], AT)
    assert isinstance(capped, list) and {g.host for g in capped} == {"a"} and [g.vcpus for g in capped] == [4, 4]
    # On a 2-vCPU host alone, as on this machine: two ml.m5.large (2 vCPUs each) share it.
    small = place(demand("ddp", "ml.m5.large", 2), [host("small", vcpus=2)], [], AT)
    assert isinstance(small, list) and [g.vcpus for g in small] == [1, 1]
    # With a second such host, each gets one in full.
    spread = place(demand("ddp", "ml.m5.large", 2), [host("s1", vcpus=2), host("s2", vcpus=2)], [], AT)
    assert isinstance(spread, list) and [(g.host, g.vcpus) for g in spread] == [("s1", 2), ("s2", 2)]


def test_gpu_instances_spread_over_hosts_with_one_gpu_each_and_too_many_is_said_at_once() -> None:
    fleet = [host("a", gpus=1), host("b", gpus=1)]
    pair = place(demand("j", "ml.g5.xlarge", 2), fleet, [], AT)
    assert isinstance(pair, list) and [(g.host, g.gpu_ids) for g in pair] == [("a", (0,)), ("b", (0,))]
    three = place(demand("k", "ml.g5.xlarge", 3), fleet, [], AT)
    assert isinstance(three, Shortfall) and three.never
    assert three.message.startswith("3 x ml.g5.xlarge (1 GPU(s), 4 vCPUs and 16 GiB each) fit no host of the fleet")
    assert "nor on 3 hosts of their own, and all on one host they need 3 GPU(s) where the most any host has is 1" in (
        three.message
    )
    # A host registered at an address its peers cannot reach takes no part of a spread job.
    loopback = [host("a", gpus=1), host("b", gpus=1, address="127.0.0.1")]
    assert place(demand("j", "ml.g5.xlarge", 2), loopback, [], AT).never  # type: ignore[union-attr]
    # local_gpu takes a host's GPUs: it never spreads to get none.
    local_gpu = place(demand("l", "local_gpu", 2), [host("a", gpus=2), host("b", gpus=2)], [], AT)
    assert isinstance(local_gpu, list) and [g.gpu_ids for g in local_gpu] == [(0,), (1,)]


def test_an_instance_larger_than_its_host_takes_the_whole_host_as_provisioning_caps_it() -> None:
    fleet = [host("small", vcpus=2, gib=4)]
    grants = place(demand("j", "ml.m5.4xlarge"), fleet, [], AT)
    assert isinstance(grants, list) and grants[0].vcpus == 2 and grants[0].memory_bytes == 4 * GIB
    assert isinstance(place(demand("k", "ml.t3.medium"), fleet, grants, AT), Shortfall)


def test_more_gpus_than_any_host_has_is_said_at_once_not_waited_for_even_of_a_draining_host() -> None:
    shortfall = place(demand("j", "ml.p4d.24xlarge"), [host("a", gpus=1)], [], AT)
    assert isinstance(shortfall, Shortfall) and shortfall.never
    assert "all on one host they need 8 GPU(s) where the most any host has is 1" in shortfall.message
    fleet = [host("a", gpus=4), host("b", gpus=1)]
    held = place(demand("small", "ml.g5.xlarge"), fleet, [], AT)
    assert isinstance(held, list)
    pair = place(demand("pair", "ml.g5.12xlarge", 2), fleet, held, AT)  # 8 GPUs on one host: never
    assert isinstance(pair, Shortfall) and pair.never
    # The only GPU host is drained for maintenance: wait for it, do not fail.
    drained = place(demand("j", "ml.g5.xlarge"), [host("gpu", gpus=1, draining=True), host("cpu")], [], AT)
    assert isinstance(drained, Shortfall) and not drained.never


def test_draining_and_silent_hosts_take_nothing_and_the_message_says_which_and_what_to_do() -> None:
    silent = host("quiet").model_copy(update={"heartbeat_at": AT - timedelta(minutes=5)})
    draining = host("drained", draining=True)
    shortfall = place(demand("j", "ml.m5.large"), [silent, draining], [], AT)
    assert isinstance(shortfall, Shortfall) and not shortfall.never
    assert "no host of the fleet takes new instances — quiet silent" in shortfall.message
    assert "drained draining" in shortfall.message and "dockyard hosts undrain NAME" in shortfall.message
    grants = place(demand("j", "ml.m5.large"), [host("a"), host("b", vcpus=64)], [], AT, only="a")
    assert isinstance(grants, list) and grants[0].host == "a"
    empty = place(demand("j", "ml.m5.large"), [], [], AT)
    assert isinstance(empty, Shortfall) and "the fleet has no hosts yet" in empty.message


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


def test_among_equals_the_preferred_host_takes_the_job() -> None:
    fleet = [host("a"), host("b"), host("c")]
    assert [g.host for g in place(demand("j", "ml.m5.large"), fleet, [], AT, prefer="b")] == ["b"]  # type: ignore[union-attr]


def test_a_clarify_jobs_shadow_model_beside_algo_1_holds_an_instances_vcpus_and_memory_on_its_grant() -> None:
    shadowed = demand("clarify", "ml.m5.xlarge", 2).model_copy(update={"spreads": False, "beside": 1})  # 4 vCPUs 16 GiB
    fleet = [host("a", vcpus=12, gib=48)]
    grants = place(shadowed, fleet, [], AT)
    assert isinstance(grants, list)
    assert [(g.instance, g.vcpus, g.memory_bytes, g.gpu_ids) for g in grants] == [
        ("algo-1", 8, 32 * GIB, ()),  # the processor's and the shadow model's
        ("algo-2", 4, 16 * GIB, ()),
    ]
    # A host with room for the instances but not the shadow beside them waits for it.
    busy = place(demand("other", "ml.m5.xlarge"), fleet, [], AT)
    assert isinstance(busy, list)
    waiting = place(shadowed, fleet, busy, AT)
    assert isinstance(waiting, Shortfall) and not waiting.never
    # Where the fleet could never hold the three containers in full, they share a host, capped.
    capped = place(shadowed, [host("small", vcpus=6, gib=24)], [], AT)
    assert isinstance(capped, list)
    assert [(g.vcpus, g.memory_bytes) for g in capped] == [(4, 16 * GIB), (2, 8 * GIB)]
