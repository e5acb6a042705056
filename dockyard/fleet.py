"""The fleet, pure: the hosts `dockyard worker` registers, what a job's instances
need of them, and where those instances fit.

The job store (infra/fleet.py) keeps the host records and the grants; this
module only decides. An instance takes its type's vCPUs and memory, capped at
the host's (as provisioning caps a container), and exactly its type's GPUs;
`local` takes nothing and `local_gpu` takes every GPU of its host. A GPU is
granted to one instance at a time; vCPUs and memory add up within the host.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from dockyard import contract
from dockyard.instances import INSTANCE_TYPES, InstanceType
from dockyard.spec import TrainingJobSpec

# A host whose worker has not beaten for this long takes no new instances.
HEARTBEAT_SECONDS = 10.0
LIVE_SECONDS = 3 * HEARTBEAT_SECONDS


class Host(BaseModel):
    """A machine of the fleet: what it offers, and whether it takes new instances."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str = ""  # where its peers reach it
    vcpus: int
    memory_bytes: int
    gpus: int = 0
    gpu_kind: str = ""  # e.g. "NVIDIA H200"
    disk_free_bytes: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    draining: bool = False  # takes no new instances; what runs there finishes
    heartbeat_at: datetime | None = None

    def live(self, at: datetime, live_seconds: float = LIVE_SECONDS) -> bool:
        return self.heartbeat_at is not None and at - self.heartbeat_at <= timedelta(seconds=live_seconds)


class Grant(BaseModel):
    """One instance of a job on one host, with what it holds there."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    instance: str  # algo-1 ..
    host: str
    vcpus: int
    memory_bytes: int
    gpu_ids: tuple[int, ...] = ()


class Demand(BaseModel):
    """What a job asks of the fleet: `count` instances of one type."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    instance_type: InstanceType
    instances: tuple[str, ...]  # algo-1 .. algo-N

    def vcpus_on(self, host: Host) -> int:
        wanted = self.instance_type.vcpus
        return 0 if wanted is None else min(wanted, host.vcpus)

    def memory_on(self, host: Host) -> int:
        wanted = self.instance_type.memory_gib
        return 0 if wanted is None else min(int(wanted * 1024**3), host.memory_bytes)

    def gpus_on(self, host: Host) -> int:
        wanted = self.instance_type.gpus
        return host.gpus if wanted < 0 else wanted


def demand_of(spec: TrainingJobSpec) -> Demand:
    resources = spec.resource_config
    return Demand(
        job_name=spec.training_job_name,
        instance_type=INSTANCE_TYPES[resources.instance_type],
        instances=tuple(contract.host_names(resources.instance_count)),
    )


class Free(BaseModel):
    """What is left on a host once its grants are taken out."""

    host: Host
    vcpus: int
    memory_bytes: int
    gpu_ids: list[int]


class Shortfall(BaseModel):
    """No room now: why, in words for the job's Pending message."""

    model_config = ConfigDict(frozen=True)

    message: str
    never: bool = False  # no live host could hold an instance even empty: waiting would not help


def free_capacity(hosts: list[Host], grants: list[Grant]) -> dict[str, Free]:
    """Each host's capacity less what its grants hold."""
    free = {
        h.name: Free(host=h, vcpus=h.vcpus, memory_bytes=h.memory_bytes, gpu_ids=list(range(h.gpus))) for h in hosts
    }
    for grant in grants:
        left = free.get(grant.host)
        if left is None:
            continue
        left.vcpus -= grant.vcpus
        left.memory_bytes -= grant.memory_bytes
        left.gpu_ids = [i for i in left.gpu_ids if i not in grant.gpu_ids]
    return free


def _fits(demand: Demand, left: Free) -> bool:
    host = left.host
    return (
        demand.vcpus_on(host) <= left.vcpus
        and demand.memory_on(host) <= left.memory_bytes
        and demand.gpus_on(host) <= len(left.gpu_ids)
    )


def place(
    demand: Demand,
    hosts: list[Host],
    grants: list[Grant],
    at: datetime,
    only: str | None = None,
    prefer: str | None = None,
    together: bool = False,
) -> list[Grant] | Shortfall:
    """Grants for every instance of `demand`, or why there is no room now.

    Candidates are the live hosts that are not draining (`only`: that host alone).
    Each instance goes to the candidate with the largest share of its vCPUs left
    (then the most GPUs left, then host `prefer`), so a tuning job's trials and a
    job's instances spread over the fleet; the GPUs it gets are the lowest-numbered free ones.
    `together`: every instance on one host (the first of them, in that order, with room for all).
    """
    candidates = [h for h in hosts if h.live(at) and not h.draining and (only is None or h.name == only)]
    itype = demand.instance_type
    wanted = f"{len(demand.instances)} x {itype.name}"
    where = f"host {only}" if only else "the fleet"
    if not candidates:
        return Shortfall(message=f"waiting for {wanted}: no live host in {where} takes new instances")
    free = free_capacity(candidates, grants)
    if together and only is None:
        order = sorted(free.values(), key=lambda f: (f.vcpus / max(f.host.vcpus, 1), f.host.name == prefer))
        answers = [place(demand, candidates, grants, at, only=left.host.name) for left in reversed(order)]
        placed = next((a for a in answers if isinstance(a, list)), None)
        if placed is not None:
            return placed
        never = all(isinstance(a, Shortfall) and a.never for a in answers)
        return Shortfall(
            message=f"waiting for {wanted} on one host: no host has room for all of them "
            f"({_left_words(list(free.values()))} free in {where})"
            if not never
            else f"{wanted} cannot run on one host of {where} even empty: choose fewer or smaller instances",
            never=never,
        )
    out: list[Grant] = []
    for instance in demand.instances:
        room = [left for left in free.values() if _fits(demand, left)]
        if not room:
            if not grants or isinstance(place(demand, candidates, [], at), Shortfall):
                most = max(h.gpus for h in candidates)
                return Shortfall(
                    message=f"{wanted} need {itype.gpus} GPU(s) each and the live hosts of {where} could not hold "
                    f"them even empty (the most GPUs on one: {most}): choose an instance type with fewer GPUs "
                    "or fewer instances, or add workers on machines with more",
                    never=True,
                )
            return Shortfall(message=f"waiting for {wanted}: {_left_words(list(free.values()))} free in {where}")
        left = max(room, key=lambda f: (f.vcpus / max(f.host.vcpus, 1), len(f.gpu_ids), f.host.name == prefer))
        host = left.host
        gpus = left.gpu_ids[: demand.gpus_on(host)]
        grant = Grant(
            job_name=demand.job_name,
            instance=instance,
            host=host.name,
            vcpus=demand.vcpus_on(host),
            memory_bytes=demand.memory_on(host),
            gpu_ids=tuple(gpus),
        )
        left.vcpus -= grant.vcpus
        left.memory_bytes -= grant.memory_bytes
        left.gpu_ids = left.gpu_ids[len(gpus) :]
        out.append(grant)
    return out


def _left_words(lefts: list[Free]) -> str:
    gpus = sum(len(f.gpu_ids) for f in lefts)
    vcpus = sum(max(f.vcpus, 0) for f in lefts)
    memory = sum(max(f.memory_bytes, 0) for f in lefts) / 1024**3
    return f"{gpus} GPU{'s' if gpus != 1 else ''}, {vcpus} vCPUs and {memory:.0f} GiB"
