"""Stage 2, provision: one instance per host, as containers see them.

An instance is a scratch folder (the host's /opt/ml input, model, output and
checkpoints) on a volume of volume_size_in_gb (infra/volumes.py), resource
limits from the instance-type catalog capped at what the host has, the config
files and SM_* environment, and a network of the job's own on which hosts are
algo-1..algo-N. A job whose fleet grants span machines runs on each machine's
own network (Docker's host networking) instead, with algo-1..algo-N in every
container's /etc/hosts at their machines' addresses, as SageMaker's instances
reach each other; each machine's worker makes its own instances (flows/instances.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard import contract
from dockyard.fleet import Grant
from dockyard.rules import HostFacts, instance_type_of
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.warm_pool import PoolStatus
from infra import credentials, docker_engine, fuse, job_log, pipe, volumes
from infra import secrets as secret_blocks
from infra.fleet import Fleet, interface_of
from infra.job_store import now, open_store
from infra.retry import task_retry_options

GIB = 1024**3
PART_CLEANUP_PATIENCE = 60.0  # past the stop grace, how long a part of an ended attempt may take to clean up


class HostPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str
    container_name: str
    scratch: str  # host folder holding input/, model/, output/, checkpoints/
    config_files: dict[str, str]
    environment: dict[str, str]
    num_cpus: int
    num_gpus: int
    nano_cpus: int | None
    mem_limit: int | None
    gpu_device_ids: list[str] | None  # None: no GPUs; []: all of them
    checkpoint_uri: str | None  # where this host's checkpoints are synced, if anywhere
    machine: str = ""  # the fleet host it is granted on ("": this machine)
    config_dir: str = contract.INPUT_CONFIG_DIR  # where config_files go (a processing job's: /opt/ml/config)
    folders: tuple[str, ...] = ()  # container paths made besides the contract's (a processing job's outputs)


HOST_NETWORK = "host"  # Docker's name for the machine's own network


class ProvisionPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_name: str
    network: str
    internal_network: bool
    scratch_root: str
    hosts: tuple[HostPlan, ...]
    warnings: tuple[str, ...]
    volume_size_gb: int = 30
    peers: dict[str, str] = {}  # algo-N -> its machine's address, when the instances span machines
    warm: bool = False  # on a warm pool's folders (dockyard.warm_pool): their staged input data kept

    def part(self, machine: str | None) -> ProvisionPlan:
        """The instances on fleet host `machine` alone (all of them outside a fleet or on one machine)."""
        if not self.peers or machine is None:
            return self
        return self.model_copy(update={"hosts": tuple(h for h in self.hosts if h.machine == machine)})

    def machines(self) -> list[str]:
        """The fleet hosts the instances are granted on, algo-1's first."""
        return list(dict.fromkeys(h.machine for h in self.hosts))


def _limits(spec: TrainingJobSpec, host: HostFacts) -> tuple[int, int | None, int | None, list[str]]:
    itype = instance_type_of(spec)
    warnings: list[str] = []
    if itype.vcpus is None:
        return host.cpus, None, None, warnings
    cpus = itype.vcpus
    if cpus > host.cpus:
        warnings.append(f"{itype.name} has {cpus} vCPUs, this host {host.cpus}: capping each instance at {host.cpus}")
        cpus = host.cpus
    memory = int((itype.memory_gib or 0) * GIB)
    if host.memory_bytes and memory > host.memory_bytes:
        warnings.append(
            f"{itype.name} has {itype.memory_gib:g} GiB, this host {host.memory_bytes / GIB:.1f} GiB: "
            "capping each instance at the host's memory"
        )
        memory = host.memory_bytes
    return cpus, cpus * 10**9, memory, warnings


def _gpus(
    spec: TrainingJobSpec, host: HostFacts, index: int, granted: tuple[int, ...] | None
) -> tuple[int, list[str] | None]:
    """The instance's GPU count and device ids: those its fleet grant names, else its share of the host's."""
    if granted is not None:
        return len(granted), ([str(i) for i in granted] if granted else None)
    wanted = instance_type_of(spec).gpus
    if wanted == 0 or host.gpus == 0:
        return 0, None
    if wanted < 0:
        return host.gpus, []
    count = spec.resource_config.instance_count
    if wanted * count <= host.gpus:
        return wanted, [str(i) for i in range(index * wanted, (index + 1) * wanted)]
    return wanted, [str(i) for i in range(wanted)]


def checkpoint_uri(spec: TrainingJobSpec, host: str) -> str | None:
    """The checkpoint URI of one host: the configured one for a single instance,
    a folder per host for several, so their files never overwrite each other."""
    if spec.checkpoint_config is None:
        return None
    uri = spec.checkpoint_config.s3_uri.rstrip("/")
    return uri if spec.resource_config.instance_count == 1 else f"{uri}/{host}"


def plan_provision(
    spec: TrainingJobSpec,
    host: HostFacts,
    scratch_root: str,
    grants: tuple[Grant, ...] = (),
    addresses: dict[str, str] | None = None,
    interface: str = contract.NETWORK_INTERFACE,
    warm_folder: str | None = None,
) -> ProvisionPlan:
    """The instances of a job: per-host folders, limits, config and environment; with
    fleet `grants`, each instance gets the GPUs its grant names, and grants on several
    machines (at `addresses`, by fleet host) make the job run on their own networks,
    reached on `interface`. `warm_folder`: the folder of the warm pool the job took over,
    under `scratch_root`, in place of the job's own."""
    granted = {g.instance: g for g in grants}
    spans = len({g.host for g in grants}) > 1
    peers = {g.instance: (addresses or {}).get(g.host, "") for g in grants} if spans else {}
    name = spec.training_job_name
    hosts = contract.host_names(spec.resource_config.instance_count)
    cpus, nano_cpus, mem_limit, warnings = _limits(spec, host)
    own = interface if spans else contract.NETWORK_INTERFACE
    root = os.path.join(scratch_root, warm_folder or name)
    plans = []
    for index, current in enumerate(hosts):
        grant = granted.get(current)
        num_gpus, device_ids = _gpus(spec, host, index, (grant.gpu_ids if grant else ()) if grants else None)
        if spec.processing is None:
            config = contract.config_files(spec, current, hosts, own)
            environment = contract.sm_environment(spec, current, hosts, cpus, num_gpus, own)
            processing: dict[str, Any] = {}
        else:  # a processing container gets its own config files, and only the job's environment
            config, environment = contract.processing_config_files(spec, current, hosts), dict(spec.environment)
            outputs = spec.processing.processing_output_config.outputs
            processing = {
                "config_dir": contract.PROCESSING_CONFIG_DIR,
                "folders": (contract.PROCESSING_CONFIG_DIR, *(o.s3_output.local_path for o in outputs)),
            }
        plans.append(
            HostPlan(
                host=current,
                container_name=f"{name}-{current}",
                scratch=os.path.join(root, current),
                config_files=config,
                environment=environment,
                num_cpus=cpus,
                num_gpus=num_gpus,
                nano_cpus=nano_cpus,
                mem_limit=mem_limit,
                gpu_device_ids=device_ids,
                checkpoint_uri=checkpoint_uri(spec, current),
                machine=grant.host if grant and spans else "",
                **processing,
            )
        )
    return ProvisionPlan(
        job_name=name,
        network=HOST_NETWORK if spans else f"dockyard-{name}",
        internal_network=spec.enable_network_isolation,
        scratch_root=root,
        hosts=tuple(plans),
        warnings=tuple(warnings),
        volume_size_gb=spec.resource_config.volume_size_in_gb,
        peers=peers,
        warm=warm_folder is not None,
    )


def create_instances(plan: ProvisionPlan) -> str | None:
    """Mount each instance's volume, make its folders, write the config files, create the
    network; returns why the volumes could not be made (the folders are then plain ones)."""
    why_not = volumes.unavailable()
    for host in plan.hosts:
        why_not = why_not or volumes.create(host.scratch, plan.volume_size_gb)
        if why_not:
            break
    if why_not:  # every host alike: none on a volume
        volumes.unmount_all(plan.scratch_root)
    for host in plan.hosts:
        write_instance(host)
    if plan.network != HOST_NETWORK:
        docker_engine.create_network(plan.network, plan.job_name, plan.internal_network)
    return why_not


def write_instance(host: HostPlan) -> None:
    """One instance's folders and config files, on its scratch folder."""
    layout = contract.host_layout(host.scratch)
    for path in (*layout.folders(), *(layout.on_host(f) for f in host.folders)):
        os.makedirs(path, exist_ok=True)
    for file_name, text in host.config_files.items():
        with open(os.path.join(layout.on_host(host.config_dir), file_name), "w") as f:
            f.write(text)


def reuse_instances(plan: ProvisionPlan) -> bool:
    """Make the instances of `plan` on the warm pool's folders, keeping their volumes and the
    staged File channels and clearing the rest (config, model, output, checkpoints, code, Pipe
    FIFOs); False when the folders are not all there (they are then made afresh)."""
    if not all(os.path.isdir(h.scratch) for h in plan.hosts):
        return False
    docker_engine.remove_job_objects(plan.job_name)  # a half-made attempt's
    if fuse.unmount_all(plan.scratch_root):  # FastFile mounts left on the folders: never clear through one
        return False
    for host in plan.hosts:
        layout = contract.host_layout(host.scratch)
        kept = {layout.input, layout.input_data}
        for folder in (host.scratch, layout.input, layout.input_data):
            for entry in os.listdir(folder) if os.path.isdir(folder) else ():
                path = os.path.join(folder, entry)
                if path in kept or (folder == layout.input_data and os.path.isdir(path)):
                    continue  # a File channel's staged objects
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
    shutil.rmtree(os.path.join(plan.scratch_root, "code"), ignore_errors=True)  # script mode's
    for host in plan.hosts:
        write_instance(host)
    if plan.network != HOST_NETWORK:
        docker_engine.create_network(plan.network, plan.job_name, plan.internal_network)
    return True


def keep_instances(job_name: str, scratch_root: str) -> int:
    """A job's end that keeps its instances as a warm pool: its containers and network removed,
    its Pipe streamers stopped and FastFile channels unmounted; the folders, on their volumes,
    stay. Returns the count of Docker objects removed."""
    credentials.revoke(job_name)
    removed = docker_engine.remove_job_objects(job_name)
    pipe.stop_all(job_name)
    fuse.unmount_all(scratch_root)
    return removed


def remove_instances(job_name: str, scratch_root: str, engine_may_be_gone: bool = False) -> int:
    """Remove the job's containers and network, stop its Pipe streamers, unmount its
    FastFile channels and volumes, and delete its scratch space; returns the count of Docker objects.
    With `engine_may_be_gone` (a restart after an infrastructure fault), an engine that does not
    answer keeps the job's objects (its containers ended with it) and the rest is cleaned up all the same."""
    credentials.revoke(job_name)
    try:
        removed = docker_engine.remove_job_objects(job_name)
    except Exception:
        if not engine_may_be_gone or docker_engine.answers():
            raise  # a hiccup of an engine that is there: the task's retries are for it
        removed = 0
    pipe.stop_all(job_name)
    still_mounted = fuse.unmount_all(scratch_root) if os.path.isdir(scratch_root) else []
    still_mounted += volumes.unmount_all(scratch_root)
    if not still_mounted:  # never delete through a mount
        shutil.rmtree(scratch_root, ignore_errors=True)
    return removed


def grants_of(settings: Settings, job_name: str) -> tuple[Grant, ...]:
    """The job's fleet grants (none outside a fleet)."""
    return tuple(Fleet(open_store(settings)).grants(job_name))


def give_back(settings: Settings, job_name: str) -> None:
    """Release the job's fleet grants, if it holds any (whoever took them: a job picked up
    by another orchestrator gives back what its first one was granted); its parts on other
    machines are stopped first, so that none still runs where another job is granted room."""
    fleet = Fleet(open_store(settings))
    _settle_parts(fleet, settings, job_name)
    fleet.release(job_name)


def _settle_parts(fleet: Fleet, settings: Settings, job_name: str) -> None:
    """Stop the job's parts that have not reported, cancel those never started, and wait on live
    hosts for the others to clean up (at most the stop grace and PART_CLEANUP_PATIENCE)."""
    waiting = [p for p in fleet.parts(job_name) if p.exits is None]
    if not waiting:
        return
    fleet.stop_parts(job_name, None, settings.stop_grace_seconds)
    deadline = time.monotonic() + settings.stop_grace_seconds + PART_CLEANUP_PATIENCE
    for part in waiting:
        if not fleet.await_report(part, deadline):
            job_log.report(
                settings.home,
                job_name,
                f"host {part.host} did not report that {', '.join(part.instances)} stopped: giving the room back "
                "all the same (`dockyard hosts` shows whether its worker beats)",
                logging.WARNING,
            )


def warm_folder(settings: Settings, job_name: str) -> str | None:
    """The folder of the warm pool the job took over, when that pool is on this machine."""
    pool = open_store(settings).get(job_name).warm_pool
    if pool is None or pool.status is not PoolStatus.IN_USE or pool.host != pool_host(settings):
        return None
    return pool.folder


def pool_host(settings: Settings) -> str:
    """How warm pools name this machine: its fleet host, else its host name."""
    return settings.fleet_host or socket.gethostname()


def plan_here(spec: TrainingJobSpec, settings: Settings) -> ProvisionPlan:
    """The job's provision plan as this machine sees it: its facts, its scratch space, the job's
    fleet grants and, when they span machines, the machines' addresses and this one's interface;
    on the folders of the warm pool it took over, if that is here."""
    grants = grants_of(settings, spec.training_job_name)
    addresses: dict[str, str] = {}
    interface = contract.NETWORK_INTERFACE
    if len({g.host for g in grants}) > 1:
        addresses = {h.name: h.address for h in Fleet(open_store(settings)).hosts()}
        interface = interface_of(addresses.get(settings.fleet_host or "", "")) or interface
    return plan_provision(
        secret_blocks.resolved(spec),
        docker_engine.host_facts(),
        str(settings.scratch_root()),
        grants,
        addresses,
        interface,
        warm_folder(settings, spec.training_job_name),
    )


def make_instances(spec: TrainingJobSpec, plan: ProvisionPlan, settings: Settings) -> None:
    """Make the instances of `plan` on this machine, after removing what a half-made attempt left."""
    for warning in plan.warnings:
        job_log.report(settings.home, plan.job_name, warning, logging.WARNING)
    if plan.warm and reuse_instances(plan):
        names = ", ".join(h.host for h in plan.hosts)
        job_log.report(settings.home, plan.job_name, f"provisioned on the warm pool's instances ({names})")
        return
    remove_instances(plan.job_name, plan.scratch_root)
    no_volumes = create_instances(plan)
    if no_volumes:
        job_log.report(
            settings.home,
            plan.job_name,
            f"volume_size_in_gb is not enforced on this machine ({no_volumes}): the instances write to the host's disk",
            logging.WARNING,
        )
    disks = "" if no_volumes else f", each on a {plan.volume_size_gb} GB volume"
    names = ", ".join(h.host for h in plan.hosts)
    job_log.append(
        settings.home,
        plan.job_name,
        f"provisioned {len(plan.hosts)} x {spec.resource_config.instance_type} ({names}) on network {plan.network}"
        f"{disks}",
    )


@task(name="provision", cache_policy=NONE, **task_retry_options())
def provision(spec: TrainingJobSpec, settings: Settings) -> ProvisionPlan:
    """Provision the job's instances on this machine; returns the provision plan of all of them
    (which holds the job's secrets, resolved from their Secret blocks for the containers' config
    files and environment). Instances granted on other machines are their workers' to make."""
    plan = plan_here(spec, settings)
    store = open_store(settings)
    if settings.fleet_host is not None:  # an earlier attempt's part here cleans up first
        attempt = len(store.get(plan.job_name).attempts) + 1
        patience = settings.stop_grace_seconds + PART_CLEANUP_PATIENCE
        Fleet(store).await_earlier_parts(plan.job_name, attempt, settings.fleet_host, patience)
    # Made before the attempt is recorded: a retry after an engine hiccup records no second one.
    make_instances(spec, plan.part(settings.fleet_host), settings)
    store.change(
        plan.job_name,
        lambda record: record.attempt_started(now()).model_copy(update={"scratch_root": str(settings.scratch_root())}),
    )
    return plan
