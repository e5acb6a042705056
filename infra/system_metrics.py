"""Reading a machine's counters for the profiler: a container's from the Docker
engine, the machine's I/O wait from /proc/stat, its GPUs' from NVML."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

from dockyard.profiling import GpuSample, Reading, reading_of
from infra import docker_engine

log = logging.getLogger("dockyard.profiler")


def cpu_ticks() -> tuple[int, int]:
    """(I/O wait, all) CPU ticks of this machine since boot."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[4], sum(fields[:8])  # user nice system idle iowait irq softirq steal


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroups(pid: int) -> dict[str, Path]:
    """The folders of the process's cgroups, by controller ("" for cgroup v2's single one)."""
    found = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            folder = CGROUP_ROOT / controller / path.lstrip("/") if controller else CGROUP_ROOT / path.lstrip("/")
            if folder.is_dir():
                found[controller] = folder
    return found


def _number(path: Path) -> int:
    text = path.read_text().strip()
    return 2**63 if text == "max" else int(text)


@functools.cache
def _machine_memory() -> int:
    kib = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]  # MemTotal: N kB
    return int(kib) * 1024


def _keyed(path: Path) -> dict[str, int]:
    pairs = (line.split() for line in path.read_text().splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2}


def _io_bytes(groups: dict[str, Path]) -> tuple[int, int]:
    """(read, written) bytes of the cgroup's block I/O."""
    if "blkio" in groups:
        read = written = 0
        for line in (groups["blkio"] / "blkio.throttle.io_service_bytes").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("Read", "Write"):
                read, written = (
                    (read + int(parts[2]), written) if parts[1] == "Read" else (read, written + int(parts[2]))
                )
        return read, written
    stat = groups[""] / "io.stat"
    fields = [f.split("=") for f in stat.read_text().split()] if stat.exists() else []
    return sum(int(v) for k, v in (f for f in fields if len(f) == 2) if k == "rbytes"), sum(
        int(v) for k, v in (f for f in fields if len(f) == 2) if k == "wbytes"
    )


def _network_bytes(pid: int) -> tuple[int, int]:
    """(received, sent) bytes on the process's network interfaces but loopback."""
    rx = tx = 0
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, counters = line.split(":", 1)
        if name.strip() != "lo":
            fields = counters.split()
            rx, tx = rx + int(fields[0]), tx + int(fields[8])
    return rx, tx


def from_cgroups(pid: int) -> Reading:
    """The counters of the container whose main process is `pid`, read straight from its cgroups.

    Raises:
        OSError: the process is gone, or its cgroups are not visible from here.
    """
    groups = _cgroups(pid)
    if "cpuacct" in groups:  # cgroup v1
        cpu_ns = _number(groups["cpuacct"] / "cpuacct.usage")
        per_core = tuple(int(n) for n in (groups["cpuacct"] / "cpuacct.usage_percpu").read_text().split())
        memory = groups["memory"]
        usage, limit = _number(memory / "memory.usage_in_bytes"), _number(memory / "memory.limit_in_bytes")
        cache = _keyed(memory / "memory.stat").get("total_inactive_file", 0)
    else:
        unified = groups[""]
        cpu_ns, per_core = _keyed(unified / "cpu.stat")["usage_usec"] * 1000, ()
        usage, limit = _number(unified / "memory.current"), _number(unified / "memory.max")
        cache = _keyed(unified / "memory.stat").get("inactive_file", 0)
    limit = min(limit, _machine_memory())  # no limit: the machine's memory is the limit
    read, written = _io_bytes(groups)
    rx, tx = _network_bytes(pid)
    iowait, total = cpu_ticks()
    return Reading(
        at=time.monotonic(),
        cpu_ns=cpu_ns,
        per_core_ns=per_core,
        memory_bytes=max(0, usage - cache),
        memory_limit_bytes=limit,
        network_rx_bytes=rx,
        network_tx_bytes=tx,
        disk_read_bytes=read,
        disk_write_bytes=written,
        iowait_ticks=iowait,
        total_ticks=total,
    )


def main_pid(container_id: str) -> int | None:
    """The container's main process as this machine sees it; None when it is not here (the engine
    runs elsewhere, or in another PID namespace): a process whose cgroups do not name the container
    is someone else's."""
    pid = int(docker_engine.state(container_id).get("Pid") or 0)
    try:
        return pid if pid and container_id in Path(f"/proc/{pid}/cgroup").read_text() else None
    except OSError:
        return None


def read(container_id: str, pid: int | None) -> Reading:
    """The container's counters now: from its cgroups when its process is on this machine
    (cheap, at any interval), else from the engine (which refreshes them once a second).

    Raises:
        OSError, docker.errors.DockerException: the container is gone, or the engine did not answer.
    """
    if pid is not None:
        return from_cgroups(pid)
    return reading_of(docker_engine.stats(container_id), time.monotonic())  # no I/O wait: this machine's is not its


@functools.cache
def _nvml() -> Any:
    """NVML, initialised once; None where there is no NVIDIA driver."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # noqa: BLE001 - no driver, no library: a machine without GPUs
        log.debug("no NVML here: %s", exc)
        return None


def gpus(indices: tuple[int, ...] | None) -> tuple[GpuSample, ...]:
    """Utilization and memory of the GPUs with these indices (None: no GPUs; (): every one
    of the machine's); none where NVML is missing."""
    nvml = _nvml()
    if nvml is None or indices is None:
        return ()
    found = []
    for index in indices or range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        use = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        found.append(
            GpuSample(
                index=index,
                utilization_percent=float(use.gpu),
                memory_used_bytes=int(memory.used),
                memory_total_bytes=int(memory.total),
            )
        )
    return tuple(found)
