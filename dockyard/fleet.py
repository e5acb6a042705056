"""The fleet, pure: the hosts `dockyard worker` registers, what a job's instances
need of them, and where those instances fit.

The job store (infra/fleet.py) keeps the host records and the grants; this
module only decides. Each instance gets its type in full (its vCPUs, memory and
GPUs): all the job's instances on one host when one has room, else one
instance on each of as many hosts (as SageMaker's instances are machines of
their own; on the machine's network, two would share its ports). A
network-isolated job never spreads (its instances share one host's own
network), nor does a `local` type, nor onto a host registered without an
address its peers can reach.
Only a type that no host, nor the fleet together, could give in full even
empty runs capped: its instances share one host and take its vCPUs and memory
(as provisioning caps each container, and as on a single machine). `local`
takes nothing and `local_gpu` the host's GPUs. A GPU is granted to one instance
at a time; vCPUs and memory add up within the host.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from dockyard import contract
from dockyard.instances import INSTANCE_TYPES, InstanceType
from dockyard.outcome import HostExit
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

    def reachable(self) -> bool:
        """Whether its peers on other machines can reach it at its address."""
        try:
            return not ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False


class Grant(BaseModel):
    """One instance of a job on one host, with what it holds there."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    instance: str  # algo-1 ..
    host: str
    vcpus: int
    memory_bytes: int
    gpu_ids: tuple[int, ...] = ()

    @property
    def number(self) -> int:
        """N of its instance algo-N."""
        return int(self.instance.rsplit("-", 1)[1])


class Part(BaseModel):
    """The instances of one attempt of a job that run on a host other than its orchestrator's:
    that host's worker runs them (flows/instances.py) and reports how they ended."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    attempt: int  # the job's attempt they belong to (1 = its first)
    host: str
    instances: tuple[str, ...]
    flow_run_id: str = ""
    stop_grace: float | None = None  # the orchestrator asked them to stop: SIGKILL after this many seconds
    exits: tuple[HostExit, ...] | None = None  # how they ended, once all have


class Demand(BaseModel):
    """What a job asks of the fleet: `count` instances of one type."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    instance_type: InstanceType
    instances: tuple[str, ...]  # algo-1 .. algo-N
    spreads: bool = True  # its instances may land on different hosts
    # Containers beside algo-1, on its host, with one instance's vCPUs and memory each and no GPUs
    # (a Clarify job's shadow model): algo-1's grant holds theirs too.
    beside: int = 0

    def may_spread(self) -> bool:
        """Whether its instances may go to different hosts: several, not isolated, nothing beside them,
        of a real type."""
        itype = self.instance_type
        several = len(self.instances) > 1 and not self.beside
        return self.spreads and several and itype.vcpus is not None and itype.gpus >= 0

    def in_full(self) -> tuple[int, int, int]:
        """One instance's (vCPUs, memory, GPUs) as its type has them (`local` types: none)."""
        itype = self.instance_type
        memory = 0 if itype.memory_gib is None else int(itype.memory_gib * 1024**3)
        return itype.vcpus or 0, memory, max(itype.gpus, 0)

    def shares_on(self, host: Host, capped: bool = True) -> list[tuple[int, int, int]]:
        """Each instance's (vCPUs, memory, GPUs) on `host` with all of them there. `capped`: vCPUs and
        memory are capped at the host's for the job as a whole (as provisioning caps each container)
        and split evenly; GPUs are the type's, exactly (`local_gpu`: the host's, split evenly). The
        containers `beside` algo-1 add their vCPUs and memory to its share."""
        itype, count = self.instance_type, len(self.instances)
        containers = count + self.beside
        if not capped and itype.gpus >= 0:
            vcpus, memory, gpus = self.in_full()
            return [(vcpus * (1 + self.beside), memory * (1 + self.beside), gpus)] + [self.in_full()] * (count - 1)
        vcpus = 0 if itype.vcpus is None else min(itype.vcpus * containers, host.vcpus)
        memory = 0 if itype.memory_gib is None else min(int(itype.memory_gib * 1024**3) * containers, host.memory_bytes)
        gpus = host.gpus // count if itype.gpus < 0 else itype.gpus
        shares = [(_part(vcpus, containers, i), _part(memory, containers, i), gpus) for i in range(count)]
        beside = range(count, containers)  # the containers beside algo-1: on its grant
        extra_vcpus, extra_memory = (
            sum(_part(vcpus, containers, i) for i in beside),
            sum(_part(memory, containers, i) for i in beside),
        )
        shares[0] = (shares[0][0] + extra_vcpus, shares[0][1] + extra_memory, shares[0][2])
        return shares


def _part(total: int, count: int, index: int) -> int:
    """`total` split into `count` whole parts as evenly as can be: part `index`."""
    return total // count + (1 if index < total % count else 0)


def demand_of(spec: TrainingJobSpec) -> Demand:
    resources = spec.resource_config
    return Demand(
        job_name=spec.training_job_name,
        instance_type=INSTANCE_TYPES[resources.instance_type],
        instances=tuple(contract.host_names(resources.instance_count)),
        # isolated instances share one host's own network; a processing job's outputs are gathered on one host
        spreads=not spec.enable_network_isolation and spec.processing is None,
        beside=int(spec.processing is not None and spec.processing.served_model_image is not None),
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


def _fits(shares: list[tuple[int, int, int]], left: Free) -> bool:
    return (
        sum(v for v, _, _ in shares) <= left.vcpus
        and sum(m for _, m, _ in shares) <= left.memory_bytes
        and sum(g for _, _, g in shares) <= len(left.gpu_ids)
    )


def _take(job: str, instances: tuple[str, ...], shares: list[tuple[int, int, int]], left: Free) -> list[Grant]:
    """Grants for `instances` on `left`'s host, each its share; `left` is what remains after."""
    out = []
    for instance, (vcpus, memory, gpus) in zip(instances, shares, strict=True):
        out.append(
            Grant(job_name=job, instance=instance, host=left.host.name, vcpus=vcpus,
                  memory_bytes=memory, gpu_ids=tuple(left.gpu_ids[:gpus]))
        )  # fmt: skip
        left.vcpus -= vcpus
        left.memory_bytes -= memory
        left.gpu_ids = left.gpu_ids[gpus:]
    return out


def _on(demand: Demand, left: Free, capped: bool) -> list[Grant] | None:
    """Grants for every instance of `demand` on the host `left` describes, if it has room."""
    shares = demand.shares_on(left.host, capped)
    if not _fits(shares, left):
        return None
    return _take(demand.job_name, demand.instances, shares, left.model_copy(deep=True))


def _spread(demand: Demand, order: list[Free]) -> list[Grant] | None:
    """Grants for every instance of `demand`, each its type in full on a reachable host of its
    own, the first hosts of `order` that have room; None if there are not enough."""
    share, out = demand.in_full(), []
    hosts = (f.model_copy(deep=True) for f in order if f.host.reachable() and _fits([share], f))
    for instance, left in zip(demand.instances, hosts, strict=False):
        out += _take(demand.job_name, (instance,), [share], left)
    return out if len(out) == len(demand.instances) else None


def _decide(demand: Demand, order: list[Free], empty: list[Free]) -> list[Grant] | None:
    """Grants for `demand` from the hosts' free capacity `order` (best first), or None: its type in
    full on one host, else spread; capped on one host only when `empty` (every registered host
    with nothing granted) could not give it in full either."""
    for left in order:
        placed = _on(demand, left, capped=False)
        if placed is not None:
            return placed
    spreads = demand.may_spread()
    placed = _spread(demand, order) if spreads else None
    if placed is not None:
        return placed
    if fits_in_full(demand, empty):
        return None  # the fleet can give it in full: wait for that
    for left in order:
        placed = _on(demand, left, capped=True)
        if placed is not None:
            return placed
    return None


def fits_in_full(demand: Demand, empty: list[Free]) -> bool:
    """Whether hosts with `empty` capacity could give every instance its type in full."""
    return any(_on(demand, e, capped=False) for e in empty) or (demand.may_spread() and bool(_spread(demand, empty)))


def place(
    demand: Demand,
    hosts: list[Host],
    grants: list[Grant],
    at: datetime,
    only: str | None = None,
    prefer: str | None = None,
) -> list[Grant] | Shortfall:
    """Grants for every instance of `demand` (see the module's docstring for where they go), in
    instance order; or why there is no room now.

    Candidates are the live hosts that are not draining (`only`: that host alone).
    Hosts are tried in order of the largest share of their vCPUs left (then the most GPUs
    left, then host `prefer`), so a tuning job's trials spread over the fleet; the GPUs
    an instance gets are the lowest-numbered free ones.
    """
    named = [h for h in hosts if only is None or h.name == only]
    candidates = [h for h in named if h.live(at) and not h.draining]
    free = free_capacity(candidates, grants)
    order = sorted(
        free.values(),
        key=lambda f: (f.vcpus / max(f.host.vcpus, 1), len(f.gpu_ids), f.host.name == prefer),
        reverse=True,
    )
    placed = _decide(demand, order, _empty(named))
    if placed is not None:
        return placed
    return _shortfall(demand, named, candidates, list(free.values()), at, only)


def _empty(hosts: list[Host]) -> list[Free]:
    return list(free_capacity(hosts, []).values())


def _shortfall(
    demand: Demand, named: list[Host], candidates: list[Host], free: list[Free], at: datetime, only: str | None
) -> Shortfall:
    """Why `demand` has no room: for good (GPUs no registered host has), or for now."""
    itype, count = demand.instance_type, len(demand.instances)
    wanted = f"{count} x {itype.name}"
    where = f"host {only}" if only else "the fleet"
    empty = _empty(named)
    if empty and _decide(demand, empty, empty) is None:
        vcpus, memory, gpus = demand.in_full()
        each = f"{gpus} GPU(s), {vcpus} vCPUs and {memory / 1024**3:.0f} GiB each"
        largest = max(named, key=lambda h: (h.gpus, h.vcpus))
        spread = f", nor on {count} hosts of their own" if demand.may_spread() else ""
        return Shortfall(
            message=f"{wanted} ({each}) fit no host of {where} in full{spread}, and all on one host they "
            f"need {gpus * count} GPU(s) where the most any host has is {largest.gpus}: choose an instance "
            "type with fewer GPUs or fewer instances, or run `dockyard worker` on more machines or larger ones",
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
    on_one = " on one host" if count > 1 and not demand.may_spread() else ""
    return Shortfall(message=f"waiting for {wanted}{on_one}: {_left_words(free)} free in {where}")


def _left_words(lefts: list[Free]) -> str:
    gpus = sum(len(f.gpu_ids) for f in lefts)
    vcpus = sum(max(f.vcpus, 0) for f in lefts)
    memory = sum(max(f.memory_bytes, 0) for f in lefts) / 1024**3
    return f"{gpus} GPU{'s' if gpus != 1 else ''}, {vcpus} vCPUs and {memory:.0f} GiB"
