"""The fleet, pure: the hosts `dockyard worker` registers, what a job's instances
need of them, and where those instances fit.

The job store (infra/fleet.py) keeps the host records and the grants; this
module only decides. A job's instances share one host: together they take
their type's vCPUs and memory, capped at the host's (as provisioning caps each
container), and exactly their type's GPUs; `local` takes nothing and
`local_gpu` the host's GPUs. A GPU is granted to one instance at a time; vCPUs
and memory add up within the host.
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

    def live(self, at: datetime) -> bool:
        return self.heartbeat_at is not None and at - self.heartbeat_at <= timedelta(seconds=LIVE_SECONDS)


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
    """What a job asks of the fleet: `count` instances of one type, all on one host."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    instance_type: InstanceType
    instances: tuple[str, ...]  # algo-1 .. algo-N

    def shares_on(self, host: Host) -> list[tuple[int, int, int]]:
        """Each instance's (vCPUs, memory, GPUs) on `host`. vCPUs and memory are capped at the
        host's for the job as a whole (as provisioning caps each container) and split evenly;
        GPUs are the type's, exactly (`local_gpu`: the host's, split evenly)."""
        itype, count = self.instance_type, len(self.instances)
        vcpus = 0 if itype.vcpus is None else min(itype.vcpus * count, host.vcpus)
        memory = 0 if itype.memory_gib is None else min(int(itype.memory_gib * 1024**3) * count, host.memory_bytes)
        gpus = host.gpus // count if itype.gpus < 0 else itype.gpus
        return [(_part(vcpus, count, i), _part(memory, count, i), gpus) for i in range(count)]


def _part(total: int, count: int, index: int) -> int:
    """`total` split into `count` whole parts as evenly as can be: part `index`."""
    return total // count + (1 if index < total % count else 0)


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
    never: bool = False  # no registered host could hold the job even empty: waiting would not help


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


def _on(demand: Demand, left: Free) -> list[Grant] | None:
    """Grants for every instance of `demand` on the host `left` describes, if it has room."""
    shares = demand.shares_on(left.host)
    fits = (
        sum(v for v, _, _ in shares) <= left.vcpus
        and sum(m for _, m, _ in shares) <= left.memory_bytes
        and sum(g for _, _, g in shares) <= len(left.gpu_ids)
    )
    if not fits:
        return None
    free_gpus, out = list(left.gpu_ids), []
    for instance, (vcpus, memory, gpus) in zip(demand.instances, shares, strict=True):
        out.append(
            Grant(job_name=demand.job_name, instance=instance, host=left.host.name, vcpus=vcpus,
                  memory_bytes=memory, gpu_ids=tuple(free_gpus[:gpus]))
        )  # fmt: skip
        free_gpus = free_gpus[gpus:]
    return out


def place(
    demand: Demand,
    hosts: list[Host],
    grants: list[Grant],
    at: datetime,
    only: str | None = None,
    prefer: str | None = None,
) -> list[Grant] | Shortfall:
    """Grants for every instance of `demand`, all on one host; or why there is no room now.

    Candidates are the live hosts that are not draining (`only`: that host alone).
    The job goes to the candidate with the largest share of its vCPUs left (then the
    most GPUs left, then host `prefer`), so a tuning job's trials spread over the
    fleet; the GPUs it gets are the lowest-numbered free ones.
    """
    named = [h for h in hosts if only is None or h.name == only]
    candidates = [h for h in named if h.live(at) and not h.draining]
    free = free_capacity(candidates, grants)
    order = sorted(
        free.values(),
        key=lambda f: (f.vcpus / max(f.host.vcpus, 1), len(f.gpu_ids), f.host.name == prefer),
        reverse=True,
    )
    for left in order:
        placed = _on(demand, left)
        if placed is not None:
            return placed
    return _shortfall(demand, named, candidates, list(free.values()), at, only)


def _shortfall(
    demand: Demand, named: list[Host], candidates: list[Host], free: list[Free], at: datetime, only: str | None
) -> Shortfall:
    """Why `demand` has no room: for good (GPUs no registered host has), or for now."""
    itype, count = demand.instance_type, len(demand.instances)
    wanted = f"{count} x {itype.name}"
    where = f"host {only}" if only else "the fleet"
    empty = [free_capacity([h], [])[h.name] for h in named]
    if empty and all(_on(demand, e) is None for e in empty):
        gpus = sum(g for _, _, g in demand.shares_on(named[0]))
        return Shortfall(
            message=f"{wanted} need {gpus} GPU(s) on one host and the most any host of {where} has is "
            f"{max(h.gpus for h in named)}: choose an instance type with fewer GPUs or fewer instances, "
            "or run `dockyard worker` on a machine with more",
            never=True,
        )
    if not named:
        hint = f"host {only} is not in the fleet" if only else "the fleet has no hosts yet"
        return Shortfall(message=f"waiting for {wanted}: {hint} (`dockyard worker` on a machine registers it)")
    if not candidates:
        states = ", ".join(
            f"{h.name} {'silent (is `dockyard worker` running there?)' if not h.live(at) else 'draining'}"
            for h in named
        )
        return Shortfall(
            message=f"waiting for {wanted}: no host of {where} takes new instances — {states}; "
            "`dockyard hosts` shows them, `dockyard hosts undrain NAME` takes a drained one back"
        )
    on_one = " on one host" if count > 1 else ""
    return Shortfall(message=f"waiting for {wanted}{on_one}: {_left_words(free)} free in {where}")


def _left_words(lefts: list[Free]) -> str:
    gpus = sum(len(f.gpu_ids) for f in lefts)
    vcpus = sum(max(f.vcpus, 0) for f in lefts)
    memory = sum(max(f.memory_bytes, 0) for f in lefts) / 1024**3
    return f"{gpus} GPU{'s' if gpus != 1 else ''}, {vcpus} vCPUs and {memory:.0f} GiB"
