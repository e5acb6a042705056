"""Stage 3, stage data: every channel made reachable at /opt/ml/input/data/CHANNEL.

- File: the objects are downloaded onto each instance. FullyReplicated
  channels go to every host; ShardedByS3Key channels give each host a 1/N
  share (round-robin over the keys). Object paths below the prefix are kept;
  sizes are verified after each download.
- Pipe: FIFOs CHANNEL_0, CHANNEL_1, ... one per epoch, fed from storage by a
  streamer thread per host (infra/pipe.py): key order, or reshuffled each
  epoch with shuffle_config's seed; sharded per epoch; Gzip decompressed and
  RecordIO framing on the way.
- FastFile: an s3:// prefix mounted read-only with s3fs-fuse (infra/fuse.py)
  and bound into every container; a file:// folder is bound as it is.
- File system channels: the directory bound in, ro or rw as asked.

ManifestFile channels take their objects from the manifest; an
AugmentedManifestFile (Pipe only) streams each line's attributes as records.
"""

from __future__ import annotations

import os
import posixpath
import random
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard import clarify, contract, script_mode
from dockyard.errors import ClientError, JobSpecError
from dockyard.settings import Settings
from dockyard.spec import (
    Channel,
    CompressionType,
    DistributionType,
    FileSystemAccessMode,
    InputMode,
    RecordWrapperType,
    S3DataType,
    TrainingJobSpec,
)
from dockyard.status import SecondaryStatus
from infra import fuse, job_log, pipe, spot, storage, volumes
from infra.checkpoint_sync import CheckpointSync
from infra.job_store import now, open_store
from infra.retry import task_retry_options
from tasks.provision import ProvisionPlan
from tasks.status import move


class Download(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str
    size: int
    dest: str
    host: str
    channel: str


class Stream(BaseModel):
    """One Pipe channel of one host."""

    model_config = ConfigDict(frozen=True)

    host: str
    channel: str
    folder: str  # the host's input/data, where the FIFOs are made
    items: tuple[str, ...]  # object URIs, or an augmented manifest's lines
    attributes: tuple[str, ...] | None  # an augmented manifest's attributes to send
    host_index: int
    host_count: int
    sharded: bool
    seed: int | None
    gzip: bool
    recordio: bool


class Mount(BaseModel):
    """A channel bound into every container at /opt/ml/input/data/CHANNEL."""

    model_config = ConfigDict(frozen=True)

    channel: str
    source: str  # the host path bound in
    s3_uri: str | None  # FastFile over S3: mounted with s3fs at `source` first
    read_only: bool


class StageDataPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    downloads: tuple[Download, ...]
    streams: tuple[Stream, ...] = ()
    mounts: tuple[Mount, ...] = ()

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


def channel_mounts(spec: TrainingJobSpec, scratch_root: str) -> tuple[Mount, ...]:
    """The FastFile and file system channels, as binds into the containers."""
    mounts = []
    for channel in spec.input_data_config:
        name = channel.channel_name
        system = channel.data_source.file_system_data_source
        source = channel.data_source.s3_data_source
        if system is not None:
            read_only = system.file_system_access_mode is FileSystemAccessMode.RO
            mounts.append(Mount(channel=name, source=system.directory_path, s3_uri=None, read_only=read_only))
        elif source is not None and spec.channel_mode(channel) is InputMode.FAST_FILE:
            if source.s3_uri.startswith("s3://"):
                mountpoint = os.path.join(scratch_root, "fastfile", name)
                mounts.append(Mount(channel=name, source=mountpoint, s3_uri=source.s3_uri, read_only=True))
            else:
                mounts.append(Mount(channel=name, source=source.s3_uri[7:], s3_uri=None, read_only=True))
    return tuple(mounts)


def epoch_order(
    items: tuple[str, ...], epoch: int, seed: int | None, host_index: int, host_count: int, sharded: bool
) -> list[str]:
    """What one host streams in one epoch: every item in order, or reshuffled for this
    epoch (the same seed gives the same orders), then this host's share when sharded."""
    order = list(items)
    if seed is not None:
        random.Random(f"{seed}/{epoch}").shuffle(order)
    return order[host_index::host_count] if sharded else order


def plan_stage_data(
    spec: TrainingJobSpec,
    listings: dict[str, list[storage.StoredObject]],
    scratch_by_host: dict[str, str],
    scratch_root: str = "",
    manifests: dict[str, tuple[str, ...]] | None = None,
) -> StageDataPlan:
    """Which object goes to which host and path (File), which host streams what (Pipe),
    and what is bound in (FastFile, file systems). `manifests` holds the lines of each
    augmented manifest channel.

    Raises:
        JobSpecError: an object path would escape its channel folder.
    """
    # Shares are the job's instances', of which `scratch_by_host` may hold a part (those on this machine).
    hosts = contract.host_names(spec.resource_config.instance_count)
    downloads, streams = [], []
    for channel in spec.input_data_config:
        name = channel.channel_name
        source = channel.data_source.s3_data_source
        mode = spec.channel_mode(channel)
        if source is None or mode is InputMode.FAST_FILE:
            continue
        objects = listings.get(name, [])
        sharded = source.s3_data_distribution_type is DistributionType.SHARDED_BY_S3_KEY
        if mode is InputMode.PIPE:
            augmented = source.s3_data_type is S3DataType.AUGMENTED_MANIFEST_FILE
            items = (manifests or {}).get(name, ()) if augmented else tuple(o.uri for o in objects)
            for index, host in enumerate(hosts):
                if host not in scratch_by_host:
                    continue
                streams.append(
                    Stream(
                        host=host,
                        channel=name,
                        folder=contract.host_layout(scratch_by_host[host]).input_data,
                        items=items,
                        attributes=tuple(source.attribute_names or ()) if augmented else None,
                        host_index=index,
                        host_count=len(hosts),
                        sharded=sharded,
                        seed=channel.shuffle_config.seed if channel.shuffle_config else None,
                        gzip=channel.compression_type is CompressionType.GZIP,
                        recordio=channel.record_wrapper_type is RecordWrapperType.RECORD_IO or augmented,
                    )
                )
            continue
        for index, obj in enumerate(objects):
            relative = _safe_relative(obj.relative, name)
            targets = [hosts[index % len(hosts)]] if sharded else hosts
            for host in (t for t in targets if t in scratch_by_host):
                dest = os.path.join(contract.host_layout(scratch_by_host[host]).channel(name), relative)
                downloads.append(Download(uri=obj.uri, size=obj.size, dest=dest, host=host, channel=name))
    return StageDataPlan(downloads=tuple(downloads), streams=tuple(streams), mounts=channel_mounts(spec, scratch_root))


def epoch_chunks(stream: Stream, endpoint_url: str | None) -> Callable[[int], Generator[bytes, None, None]]:
    """The bytes a Pipe channel sends in an epoch."""

    def chunks(epoch: int) -> Generator[bytes, None, None]:
        for item in epoch_order(stream.items, epoch, stream.seed, stream.host_index, stream.host_count, stream.sharded):
            if stream.attributes is not None:
                yield from pipe.records_of_line(item, list(stream.attributes), endpoint_url)
            elif stream.recordio:
                yield pipe.recordio(b"".join(pipe.object_chunks(item, stream.gzip, endpoint_url)))
            else:
                yield from pipe.object_chunks(item, stream.gzip, endpoint_url)

    return chunks


def _listing(channel: Channel, endpoint_url: str | None) -> list[storage.StoredObject]:
    source = channel.data_source.s3_data_source
    if source is None or source.s3_data_type is S3DataType.AUGMENTED_MANIFEST_FILE:
        return []
    if source.s3_data_type is S3DataType.MANIFEST_FILE:
        return storage.manifest_objects(source.s3_uri, endpoint_url)
    return storage.list_objects(source.s3_uri, endpoint_url)


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


def drop_unplanned(spec: TrainingJobSpec, plan: StageDataPlan, provisioned: ProvisionPlan) -> int:
    """On a warm pool's instances: remove what an earlier job staged in a File channel that this
    job's plan does not put there (an object deleted since, another instance's shard); the count."""
    planned = {d.dest for d in plan.downloads}
    dropped = 0
    for host in provisioned.hosts:
        for channel in spec.input_data_config:
            if spec.channel_mode(channel) is not InputMode.FILE or channel.data_source.s3_data_source is None:
                continue
            for folder, _, names in os.walk(contract.host_layout(host.scratch).channel(channel.channel_name)):
                for file_name in names:
                    if (path := os.path.join(folder, file_name)) not in planned:
                        os.remove(path)
                        dropped += 1
    return dropped


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


def code_folder(scratch_root: str) -> str:
    """The host folder that holds a script-mode job's code, mounted read-only at /opt/ml/code."""
    return os.path.join(scratch_root, "code")


def model_folder(scratch_root: str) -> str:
    """The host folder that holds the model a Clarify job explains, unpacked (dockyard.clarify)."""
    return os.path.join(scratch_root, "model")


def stage_code(code: script_mode.CodeSource, folder: str, endpoint_url: str | None) -> int:
    """Copy the job's code (or a Clarify job's model) into `folder`: a folder's files as they are,
    a .tar.gz unpacked; returns the file count.

    Raises:
        JobSpecError: the archive cannot be unpacked, or a path in it leads outside the folder.
    """
    shutil.rmtree(folder, ignore_errors=True)
    objects = storage.list_objects(code.uri, endpoint_url)
    if not code.is_archive:
        for obj in objects:
            storage.download(obj, os.path.join(folder, _safe_relative(obj.relative, "code")), endpoint_url)
        return len(objects)
    archive = folder + ".tar.gz"
    exact = [o for o in objects if o.uri == code.uri] or objects[:1]
    if not exact:
        raise JobSpecError(f"{code.field}: {code.uri} holds nothing — check the URI")
    storage.download(exact[0], archive, endpoint_url)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            tar.extractall(folder, filter="data")  # refuses absolute paths, .. and links out of the folder
    except (tarfile.TarError, OSError) as exc:
        raise JobSpecError(
            f"{code.field}: cannot unpack {code.uri} ({exc}) — give a .tar.gz (a gzipped tar) of the folder"
        ) from None
    finally:
        os.remove(archive)
    return sum(1 for m in members if m.isfile())


def check_room(plan: StageDataPlan, provisioned: ProvisionPlan) -> None:
    """Refuse, before any download, input that would not fit a host's volume.

    Raises:
        ClientError: naming the host, the bytes and the volume's size.
    """
    for host in provisioned.hosts:
        size = volumes.size_gb(host.scratch)
        if size is None:
            continue
        needed = sum(d.size for d in plan.downloads if d.host == host.host)
        room = volumes.free_bytes(host.scratch)
        if needed > room:
            raise ClientError(
                f"input_data_config: {host.host}'s File-mode input is {needed / 1e9:.2f} GB, more than its "
                f"volume of {size} GB (resource_config.volume_size_in_gb) holds ({room / 1e9:.2f} GB free) — "
                "raise volume_size_in_gb, shard the channel (ShardedByS3Key), or use Pipe or FastFile mode"
            )


@task(name="stage-data", cache_policy=NONE, **task_retry_options())
def stage_data(spec: TrainingJobSpec, provisioned: ProvisionPlan, settings: Settings, as_part: bool = False) -> int:
    """Download File channels, start Pipe streamers, mount FastFile channels; returns the bytes staged.
    `as_part`: for instances on another machine than the orchestrator's, which moves the status."""
    store = open_store(settings)
    endpoint_url = settings.s3_endpoint_url
    name = spec.training_job_name
    record = store.get(name)
    start = {"training_start_time": record.training_start_time or now()}
    if not as_part and record.secondary is not SecondaryStatus.DOWNLOADING:  # else a retry of this task
        move(settings, name, record.secondary, SecondaryStatus.DOWNLOADING, "Downloading input data", **start)
    spot.check(settings, name)
    listings = {
        c.channel_name: _listing(c, endpoint_url)
        for c in spec.input_data_config
        if spec.channel_mode(c) is not InputMode.FAST_FILE
    }
    manifests = {
        c.channel_name: tuple(
            line
            for line in storage.read_bytes(c.data_source.s3_data_source.s3_uri, endpoint_url).decode().splitlines()
            if line.strip()
        )
        for c in spec.input_data_config
        if c.data_source.s3_data_source is not None
        and c.data_source.s3_data_source.s3_data_type is S3DataType.AUGMENTED_MANIFEST_FILE
    }
    plan = plan_stage_data(
        spec, listings, {h.host: h.scratch for h in provisioned.hosts}, provisioned.scratch_root, manifests
    )

    def report(message: str) -> None:
        job_log.report(settings.home, name, message)

    check_room(plan, provisioned)
    report(
        f"staging {len(plan.downloads)} objects ({plan.total_bytes / 1e6:.1f} MB) to {len(provisioned.hosts)} host(s)"
    )
    if provisioned.warm:  # storage.download keeps a copy of the right size
        dropped = drop_unplanned(spec, plan, provisioned)
        if dropped:
            report(f"warm pool: removed {dropped} staged file(s) the channels no longer hold for their instance")
        there = [d for d in plan.downloads if os.path.isfile(d.dest) and os.path.getsize(d.dest) == d.size]
        megabytes = sum(d.size for d in there) / 1e6
        report(f"warm pool: {len(there)} of them ({megabytes:.1f} MB) are on the instances already")
    # Only a spot job asks the market between downloads: it reads the record each time.
    between = (lambda: spot.check(settings, name)) if spec.enable_managed_spot_training else None
    carry_out(plan, settings.staging_concurrency, endpoint_url, report, between=between)
    for mount in plan.mounts:
        for host in provisioned.hosts:  # the bind's target, inside the read-only input mount
            os.makedirs(contract.host_layout(host.scratch).channel(mount.channel), exist_ok=True)
        if mount.s3_uri:
            fuse.mount(mount.s3_uri, mount.source, endpoint_url)
            report(f"FastFile channel {mount.channel}: {mount.s3_uri} mounted with s3fs, read on demand")
    for stream in plan.streams:
        pipe.start(name, pipe.Streamer(stream.folder, stream.channel, epoch_chunks(stream, endpoint_url), report))
    if plan.streams:
        report(f"Pipe: {len(plan.streams)} channel stream(s) ready as FIFOs CHANNEL_0, CHANNEL_1, ...")
    code = script_mode.code_source(spec)
    if code:
        count = stage_code(code, code_folder(provisioned.scratch_root), endpoint_url)
        report(f"script mode: {count} file(s) of code from {code.uri}, read-only at {script_mode.CODE_DIR}")
    model = spec.processing.analyzed_model if spec.processing else None
    if model is not None:
        source = script_mode.CodeSource(uri=model.model_data, field="analysis_config.json: predictor.model_name")
        count = stage_code(source, model_folder(provisioned.scratch_root), endpoint_url)
        made_by = f" (training job {model.training_job_name})" if model.training_job_name else ""
        served = f"served by {model.image} as {clarify.ENDPOINT}" if model.image else f"at {clarify.MODEL_DIR}"
        report(f"Clarify: the model{made_by}, {count} file(s) from {model.model_data}, {served}")
    for host in provisioned.hosts:
        if host.checkpoint_uri:
            restored = CheckpointSync(
                contract.host_layout(host.scratch).checkpoints, host.checkpoint_uri, endpoint_url, report
            ).restore()
            report(f"{host.host}: restored {restored} checkpoint file(s) from {host.checkpoint_uri}")
    return plan.total_bytes
