"""System metrics: one sample per instance per profiling interval, made from the
Docker engine's counters (pure; infra/system_metrics.py reads them).

The engine gives running totals (CPU nanoseconds, bytes read); a sample holds
the rates between two readings, so the first reading of a container makes none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from dockyard.record import MetricValue


class GpuSample(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int  # the device's index on its host, as NVML and CUDA_VISIBLE_DEVICES count
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int


class Reading(BaseModel):
    """One container's running totals at one moment, as the engine reports them."""

    model_config = ConfigDict(frozen=True)

    at: float  # monotonic seconds, when it was read
    cpu_ns: int
    per_core_ns: tuple[int, ...] = ()  # cgroup v1 only
    memory_bytes: int
    memory_limit_bytes: int
    network_rx_bytes: int = 0
    network_tx_bytes: int = 0
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    iowait_ticks: int = 0  # the host's, from /proc/stat
    total_ticks: int = 0


class SystemSample(BaseModel):
    """What one instance used over one profiling interval."""

    model_config = ConfigDict(frozen=True)

    host: str  # algo-1 ..
    timestamp: datetime
    cpu_percent: float  # of the vCPUs the instance may use, 0-100
    cpu_per_core: tuple[float, ...] = ()  # each of the machine's cores, 0-100, this instance's share
    memory_bytes: int
    memory_limit_bytes: int
    network_rx_bytes_per_s: float = 0.0
    network_tx_bytes_per_s: float = 0.0
    disk_read_bytes_per_s: float = 0.0
    disk_write_bytes_per_s: float = 0.0
    iowait_percent: float | None = None  # the machine's CPU time waiting on I/O
    gpus: tuple[GpuSample, ...] = ()

    @property
    def gpu_percent(self) -> float | None:
        """Mean utilization of the instance's GPUs, None when it has none."""
        return sum(g.utilization_percent for g in self.gpus) / len(self.gpus) if self.gpus else None


def reading_of(stats: dict[str, Any], at: float, iowait_ticks: int = 0, total_ticks: int = 0) -> Reading:
    """A Reading from one Docker stats answer (`GET /containers/ID/stats?stream=false&one-shot=true`)."""
    cpu = stats.get("cpu_stats", {}).get("cpu_usage", {})
    memory = stats.get("memory_stats", {})
    counters = memory.get("stats", {})  # the docker CLI's count: usage less the inactive page cache
    cached = counters.get("total_inactive_file", counters.get("inactive_file", 0))
    networks = (stats.get("networks") or {}).values()
    disk = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return Reading(
        at=at,
        cpu_ns=int(cpu.get("total_usage", 0)),
        per_core_ns=tuple(int(n) for n in cpu.get("percpu_usage") or ()),
        memory_bytes=max(0, int(memory.get("usage", 0)) - int(cached)),
        memory_limit_bytes=int(memory.get("limit", 0)),
        network_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks),
        network_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks),
        disk_read_bytes=sum(int(d.get("value", 0)) for d in disk if str(d.get("op", "")).lower() == "read"),
        disk_write_bytes=sum(int(d.get("value", 0)) for d in disk if str(d.get("op", "")).lower() == "write"),
        iowait_ticks=iowait_ticks,
        total_ticks=total_ticks,
    )


def _rate(now: int, before: int, seconds: float) -> float:
    return max(0, now - before) / seconds  # a counter that went back (a restarted container) is no negative rate


def sample_between(
    host: str, before: Reading, now: Reading, vcpus: float, at: datetime, gpus: tuple[GpuSample, ...] = ()
) -> SystemSample:
    """The sample for the interval between two readings; `vcpus` is what the instance may use."""
    seconds = max(now.at - before.at, 1e-6)
    cores = [
        min(100.0, _rate(n, b, seconds) / 1e7)  # ns per s over 1e9, as a percent
        for n, b in zip(now.per_core_ns, before.per_core_ns, strict=False)
    ]
    ticks = now.total_ticks - before.total_ticks
    return SystemSample(
        host=host,
        timestamp=at,
        cpu_percent=min(100.0, _rate(now.cpu_ns, before.cpu_ns, seconds) / 1e7 / max(vcpus, 1e-3)),
        cpu_per_core=tuple(round(c, 2) for c in cores),
        memory_bytes=now.memory_bytes,
        memory_limit_bytes=now.memory_limit_bytes,
        network_rx_bytes_per_s=_rate(now.network_rx_bytes, before.network_rx_bytes, seconds),
        network_tx_bytes_per_s=_rate(now.network_tx_bytes, before.network_tx_bytes, seconds),
        disk_read_bytes_per_s=_rate(now.disk_read_bytes, before.disk_read_bytes, seconds),
        disk_write_bytes_per_s=_rate(now.disk_write_bytes, before.disk_write_bytes, seconds),
        iowait_percent=100 * (now.iowait_ticks - before.iowait_ticks) / ticks if ticks > 0 else None,
        gpus=gpus,
    )


def summary(samples: list[SystemSample]) -> list[dict[str, Any]]:
    """Per instance: how many samples, mean and peak CPU, peak memory, mean GPU use — for `jobs describe`."""
    rows = []
    for host in sorted({s.host for s in samples}):
        mine = [s for s in samples if s.host == host]
        gpu = [s.gpu_percent for s in mine if s.gpu_percent is not None]
        row: dict[str, Any] = {
            "Host": host,
            "Samples": len(mine),
            "CpuPercentMean": round(sum(s.cpu_percent for s in mine) / len(mine), 1),
            "CpuPercentMax": round(max(s.cpu_percent for s in mine), 1),
            "MemoryMiBMax": round(max(s.memory_bytes for s in mine) / 2**20, 1),
            "DiskReadMiBPerSecondMax": round(max(s.disk_read_bytes_per_s for s in mine) / 2**20, 2),
            "NetworkMiBPerSecondMax": round(
                max(s.network_rx_bytes_per_s + s.network_tx_bytes_per_s for s in mine) / 2**20, 2
            ),
        }
        if gpu:
            row["GpuPercentMean"] = round(sum(gpu) / len(gpu), 1)
            row["GpuMemoryMiBMax"] = round(max(sum(g.memory_used_bytes for g in s.gpus) for s in mine) / 2**20, 1)
        rows.append(row)
    return rows


def _hour_and_minute(at: datetime) -> tuple[str, int]:
    epoch = int(at.timestamp())
    return at.strftime("%Y%m%d%H"), epoch - epoch % 60


def file_key(sample: SystemSample) -> str:
    """Where a sample's line goes under the profiler's output, as SageMaker lays it out:
    one file per instance per minute, `system/incremental/YYYYMMDDHH/<minute epoch>.<host>.json`."""
    hour, minute = _hour_and_minute(sample.timestamp)
    return f"system/incremental/{hour}/{minute}.{sample.host}.json"


def sagemaker_records(sample: SystemSample) -> list[dict[str, Any]]:
    """The sample as SageMaker's system-metric records (one JSON object per line in its files)."""
    at, node = sample.timestamp.timestamp(), sample.host

    def record(kind: str, name: str, dimension: str, value: float) -> dict[str, Any]:
        return {"Type": kind, "Name": name, "Dimension": dimension, "Value": round(value, 3), "NodeId": node,
                "Timestamp": at}  # fmt: skip

    cores = sample.cpu_per_core or (sample.cpu_percent,)
    out = [record("cpu", f"cpu{i}", "CPUUtilization", v) for i, v in enumerate(cores)]
    if sample.iowait_percent is not None:
        out.append(record("cpu", "cpu", "I/OWaitPercentage", sample.iowait_percent))
    used = 100 * sample.memory_bytes / sample.memory_limit_bytes if sample.memory_limit_bytes else 0.0
    out.append(record("memory", "MemoryUsedPercent", "Memory", used))
    out.append(record("network", "ReceiveBytesPerSecond", "Algorithm", sample.network_rx_bytes_per_s))
    out.append(record("network", "TransmitBytesPerSecond", "Algorithm", sample.network_tx_bytes_per_s))
    out.append(record("i/o", "ReadThroughputInBytesPerSecond", "I/O", sample.disk_read_bytes_per_s))
    out.append(record("i/o", "WriteThroughputInBytesPerSecond", "I/O", sample.disk_write_bytes_per_s))
    for g in sample.gpus:
        out.append(record("gpu", f"gpu{g.index}", "GPUUtilization", g.utilization_percent))
        memory = 100 * g.memory_used_bytes / g.memory_total_bytes if g.memory_total_bytes else 0.0
        out.append(record("gpu", f"gpu{g.index}", "GPUMemoryUtilization", memory))
    return out


MLFLOW_POINTS = 1000  # per instance: enough for a curve, few enough for one log_batch round


def as_metric_values(samples: list[SystemSample]) -> list[MetricValue]:
    """The samples as MLflow system metrics (`system/<host>/cpu_utilization_percentage`, ...),
    thinned evenly to MLFLOW_POINTS per instance."""
    out = []
    for host in sorted({s.host for s in samples}):
        mine = [s for s in samples if s.host == host]
        for s in mine[:: max(1, len(mine) // MLFLOW_POINTS)]:
            values = {
                "cpu_utilization_percentage": s.cpu_percent,
                "system_memory_usage_megabytes": s.memory_bytes / 2**20,
                "network_receive_megabytes_per_second": s.network_rx_bytes_per_s / 2**20,
                "network_transmit_megabytes_per_second": s.network_tx_bytes_per_s / 2**20,
                "disk_read_megabytes_per_second": s.disk_read_bytes_per_s / 2**20,
                "disk_write_megabytes_per_second": s.disk_write_bytes_per_s / 2**20,
            }
            for g in s.gpus:
                values[f"gpu_{g.index}_utilization_percentage"] = g.utilization_percent
                values[f"gpu_{g.index}_memory_usage_megabytes"] = g.memory_used_bytes / 2**20
            out += [
                MetricValue(metric_name=f"system/{host}/{name}", value=v, timestamp=s.timestamp, host=host)
                for name, v in values.items()
            ]
    return out
