"""Stage 3, stage data (File mode): every channel's objects onto the instances.

FullyReplicated channels go to every host; ShardedByS3Key channels give each
host a 1/N share of the objects (round-robin over the sorted keys). Object
paths below the prefix are kept; sizes are verified after each download.
"""

from __future__ import annotations

import os
import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard.errors import JobSpecError
from dockyard.spec import DistributionType, TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import records, spot, storage
from infra.checkpoint_sync import CheckpointSync
from infra.retry import task_retry_options
from tasks.provision import ProvisionPlan, host_dirs


class Download(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str
    size: int
    dest: str
    host: str
    channel: str


class StageDataPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    downloads: tuple[Download, ...]

    @property
    def total_bytes(self) -> int:
        return sum(d.size for d in self.downloads)


def _safe_relative(relative: str, channel: str) -> str:
    parts = relative.split("/")
    if relative.startswith("/") or any(p in ("..", "") for p in parts):
        raise JobSpecError(
            f"channel {channel}: object path '{relative}' would leave the channel folder "
            "— rename the object (no '..' or empty path segments)"
        )
    return posixpath.join(*parts)


def plan_stage_data(
    spec: TrainingJobSpec, listings: dict[str, list[storage.StoredObject]], scratch_by_host: dict[str, str]
) -> StageDataPlan:
    """Which object goes to which host and path.

    Raises:
        JobSpecError: an object path would escape its channel folder.
    """
    hosts = sorted(scratch_by_host)
    downloads = []
    for channel in spec.input_data_config:
        name = channel.channel_name
        objects = listings.get(name, [])
        sharded = channel.data_source.s3_data_source.s3_data_distribution_type is DistributionType.SHARDED_BY_S3_KEY
        for index, obj in enumerate(objects):
            relative = _safe_relative(obj.relative, name)
            targets = [hosts[index % len(hosts)]] if sharded else hosts
            for host in targets:
                dest = os.path.join(host_dirs(scratch_by_host[host])["input"], "data", name, relative)
                downloads.append(Download(uri=obj.uri, size=obj.size, dest=dest, host=host, channel=name))
    return StageDataPlan(downloads=tuple(downloads))


class _Progress:
    """Logs staging progress at most every two seconds."""

    def __init__(self, total_files: int, total_bytes: int, report: Any) -> None:
        self.total_files, self.total_bytes, self.report = total_files, total_bytes, report
        self.files = self.bytes = 0
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def add(self, size: int) -> None:
        with self.lock:
            self.files += 1
            self.bytes += size
            if time.monotonic() - self.last >= 2 or self.files == self.total_files:
                self.last = time.monotonic()
                self.report(
                    f"staged {self.files}/{self.total_files} objects, "
                    f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB"
                )


def carry_out(
    plan: StageDataPlan, concurrency: int, endpoint_url: str | None, report: Any, between: Any = None
) -> None:
    """Download every planned object with bounded concurrency; `between` runs
    before each download and may raise to abandon the rest."""
    progress = _Progress(len(plan.downloads), plan.total_bytes, report)

    def fetch(item: Download) -> None:
        if between is not None:
            between()
        storage.download(storage.StoredObject(item.uri, "", item.size), item.dest, endpoint_url)
        progress.add(item.size)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(fetch, d) for d in plan.downloads]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@task(name="stage-data", cache_policy=NONE, **task_retry_options())
def stage_data(
    spec_json: dict[str, Any], provision_json: dict[str, Any], home: str, endpoint_url: str | None, concurrency: int
) -> int:
    """Stage every File-mode channel; returns the bytes staged."""
    logger = get_run_logger()
    spec = TrainingJobSpec.model_validate(spec_json)
    provisioned = ProvisionPlan.model_validate(provision_json)
    name = spec.training_job_name
    record = records.load(home, name)
    if record.status.secondary is not SecondaryStatus.DOWNLOADING:
        records.transition(home, name, SecondaryStatus.DOWNLOADING, "Downloading input data")
    if record.training_start_time is None:
        records.update(home, name, training_start_time=records.now())
    spot.check(home, name)
    listings = {
        c.channel_name: storage.list_objects(c.data_source.s3_data_source.s3_uri, endpoint_url)
        for c in spec.input_data_config
    }
    plan = plan_stage_data(spec, listings, {h.host: h.scratch for h in provisioned.hosts})

    def report(message: str) -> None:
        logger.info(message)
        records.append_log(home, name, message)

    report(
        f"staging {len(plan.downloads)} objects ({plan.total_bytes / 1e6:.1f} MB) to {len(provisioned.hosts)} host(s)"
    )
    # Only a spot job asks the market between downloads: it reads the record each time.
    between = (lambda: spot.check(home, name)) if spec.enable_managed_spot_training else None
    carry_out(plan, concurrency, endpoint_url, report, between=between)
    for host in provisioned.hosts:
        if host.checkpoint_uri:
            restored = CheckpointSync(
                host_dirs(host.scratch)["checkpoints"], host.checkpoint_uri, endpoint_url, report
            ).restore()
            report(f"{host.host}: restored {restored} checkpoint file(s) from {host.checkpoint_uri}")
    return plan.total_bytes
