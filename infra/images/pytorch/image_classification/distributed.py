"""Several hosts as one data-parallel job: torch.distributed over resourceconfig.json's
hosts (rank = position in hosts, rendezvous at hosts[0]), and the few collectives
the training loop needs. With one host every function is a plain local answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from image_classification.config import Job, TrainingError

DEFAULT_PORT = 29500
RENDEZVOUS_SECONDS = 300.0  # how long hosts wait for each other at start
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # one host may validate or checkpoint while the others wait


@dataclass(frozen=True)
class World:
    host: str
    rank: int
    size: int
    device: torch.device


def setup(job: Job, device: torch.device) -> World:
    """Join the job's process group (gloo on CPU, nccl on CUDA); DOCKYARD_DIST_PORT and
    DOCKYARD_DIST_TIMEOUT (seconds) override the rendezvous port and wait.

    Raises:
        TrainingError: the hosts did not all meet within the wait.
    """
    host, hosts = job.current_host, list(job.hosts)
    if host not in hosts:
        raise TrainingError(f"resourceconfig.json: current_host {host} is not among hosts {hosts}")
    world = World(host, hosts.index(host), len(hosts), device)
    if world.size == 1:
        return world
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        os.environ.setdefault(name, job.network_interface)
    port = int(os.environ.get("DOCKYARD_DIST_PORT", DEFAULT_PORT))
    wait = float(os.environ.get("DOCKYARD_DIST_TIMEOUT", RENDEZVOUS_SECONDS))
    try:
        store = dist.TCPStore(hosts[0], port, world.size, is_master=world.rank == 0,
                              timeout=timedelta(seconds=wait), wait_for_workers=True)
    except Exception as exc:  # noqa: BLE001 - c10d raises several kinds for the same cause
        cause = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if world.rank == 0:
            raise TrainingError(f"{host}: not every host of {hosts} reached {host}:{port} within {wait:.0f} s "
                                f"({cause}); check that the hosts share a network and port {port} is free") from None
        raise TrainingError(f"{host} could not reach {hosts[0]}:{port} within {wait:.0f} s ({cause}); check that "
                            f"the hosts share a network and {hosts[0]} is running") from None
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=world.rank,
                            world_size=world.size, timeout=COLLECTIVE_TIMEOUT)
    return world


def close(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(world: World, values: list[float]) -> list[float]:
    """Each value summed over the hosts."""
    if world.size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_min(world: World, value: int) -> int:
    """The smallest of the hosts' values."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def all_true(world: World, flag: bool) -> bool:
    """Whether every host's flag is set."""
    return all_min(world, int(flag)) == 1
