"""Stage 7, persist: the job's artifacts to its output location.

model.tar.gz (every host's /opt/ml/model, algo-1 first) and output.tar.gz
(/opt/ml/output/data) go to {s3_output_path}/{job}/output/, after a failure
or a stop too, as SageMaker does. Instances on other machines (tasks/peers.py)
leave theirs under .parts/ there, merged in here and then deleted. What follows (the final status, job.json,
teardown, the catalog) is tasks/finalize.py's.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
import tempfile

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard import contract
from dockyard.fleet import Part
from dockyard.secrets import mask_text
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import credentials, job_log, spot, storage
from infra import secrets as secret_blocks
from infra.job_store import open_store
from infra.retry import task_retry_options
from tasks.follow import read_container_file
from tasks.provision import ProvisionPlan
from tasks.status import move


class PersistPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_sources: tuple[str, ...]  # host folders merged into model.tar.gz, algo-1 first
    output_sources: tuple[str, ...]  # host folders merged into output.tar.gz
    model_uri: str
    output_uri: str


def output_prefix(spec: TrainingJobSpec) -> str:
    return storage.join(spec.output_data_config.s3_output_path, spec.training_job_name, "output")


MODEL, OUTPUT = "model", "output"  # a part's two archives
PARTS_FOLDER = ".parts"  # under the job's output prefix


def archive_uri(spec: TrainingJobSpec, attempt: int, host: str, kind: str) -> str:
    """Where a part (the instances on fleet host `host`) leaves its `kind` folders, packed, for persist."""
    return storage.join(output_prefix(spec), PARTS_FOLDER, str(attempt), host, f"{kind}.tar.gz")


def plan_persist(
    spec: TrainingJobSpec, scratch_by_host: dict[str, str], unpacked: tuple[tuple[str, str], ...] = ()
) -> PersistPlan:
    """`unpacked`: the (model, output data) folders of the parts on other machines, in host order."""
    hosts = sorted(scratch_by_host, key=lambda h: int(h.rsplit("-", 1)[1]))
    prefix = output_prefix(spec)
    return PersistPlan(
        model_sources=tuple(contract.host_layout(scratch_by_host[h]).model for h in hosts)
        + tuple(m for m, _ in unpacked),
        output_sources=tuple(contract.host_layout(scratch_by_host[h]).output_data for h in hosts)
        + tuple(o for _, o in unpacked),
        model_uri=storage.join(prefix, contract.MODEL_ARCHIVE),
        output_uri=storage.join(prefix, contract.OUTPUT_ARCHIVE),
    )


def pack(sources: tuple[str, ...], archive: str) -> tuple[int, list[str]]:
    """Tar+gzip the files of `sources` into `archive`; the first host's copy of a path wins.

    Returns the number of files packed and the paths that clashed.
    """
    seen: set[str] = set()
    clashes = []
    with tarfile.open(archive, "w:gz") as tar:
        for source in sources:
            for folder, _, files in os.walk(source):
                for file_name in sorted(files):
                    full = os.path.join(folder, file_name)
                    relative = os.path.relpath(full, source)
                    if relative in seen:
                        clashes.append(relative)
                        continue
                    seen.add(relative)
                    tar.add(full, arcname=relative)
    return len(seen), clashes


def _unpack_parts(
    spec: TrainingJobSpec, parts: tuple[Part, ...], folder: str, settings: Settings
) -> tuple[tuple[str, str], ...]:
    """The parts' archives unpacked under `folder`: (model, output data) folders, in host order."""
    out = []
    for part in sorted(parts, key=lambda p: int(p.instances[0].rsplit("-", 1)[1])):
        folders = []
        for kind in (MODEL, OUTPUT):
            target = os.path.join(folder, part.host, kind)
            os.makedirs(target)
            uri = archive_uri(spec, part.attempt, part.host, kind)
            if storage.exists(uri, settings.s3_endpoint_url):
                with storage.open_read(uri, settings.s3_endpoint_url) as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
                    tar.extractall(target, filter="data")
            else:
                job_log.report(
                    settings.home,
                    spec.training_job_name,
                    f"host {part.host} left no {kind} for {', '.join(part.instances)}: it ended before it could",
                    logging.WARNING,
                )
            folders.append(target)
        out.append((folders[0], folders[1]))
    return tuple(out)


def upload_outputs(spec: TrainingJobSpec, provisioned: ProvisionPlan, settings: Settings) -> str | None:
    """A processing job's outputs: each output folder's files, every instance's (algo-1's first
    where two hold one path), to its S3 URI; returns its ExitMessage (the instances'
    /opt/ml/output/message, joined, at most 1 KB)."""
    if spec.processing is None:
        raise ValueError(f"{spec.training_job_name} is not a processing job")
    name = spec.training_job_name
    for output in spec.processing.processing_output_config.outputs:
        seen: set[str] = set()
        for host in provisioned.hosts:
            folder = contract.host_layout(host.scratch).on_host(output.s3_output.local_path)
            for root, _, files in os.walk(folder):
                for file_name in sorted(files):
                    full = os.path.join(root, file_name)
                    relative = os.path.relpath(full, folder)
                    if relative in seen or not stat.S_ISREG(os.lstat(full).st_mode):  # no links, FIFOs, devices
                        continue
                    seen.add(relative)
                    uri = storage.join(output.s3_output.s3_uri, relative)
                    storage.upload_beneath(folder, relative, uri, settings.s3_endpoint_url)  # never through a link
        job_log.report(
            settings.home,
            name,
            f"output {output.output_name}: uploaded {len(seen)} file(s) to {output.s3_output.s3_uri}",
        )
    messages = [
        read_container_file(contract.host_layout(h.scratch).on_host(contract.EXIT_MESSAGE_FILE))
        for h in provisioned.hosts
    ]
    joined = "\n".join(m for m in messages if m)[: contract.FAILURE_REASON_LIMIT]
    hidden = secret_blocks.values(spec) | credentials.secret_values(name)  # as the containers' lines are masked
    return mask_text(joined, hidden) if joined else None


@task(name="persist", cache_policy=NONE, **task_retry_options())
def persist(
    spec: TrainingJobSpec, provisioned: ProvisionPlan, settings: Settings, parts: tuple[Part, ...] = ()
) -> None:
    """Upload model.tar.gz and output.tar.gz, and record where they are; `parts`: the instances
    on other machines, whose archives are merged in (after this machine's, algo-1's) and deleted."""
    store = open_store(settings)
    name = spec.training_job_name
    record = store.get(name)
    if record.secondary is not SecondaryStatus.UPLOADING:  # else a retry of this task, or a reattached job
        what = "the processing job's outputs" if spec.processing else "generated training model"
        move(settings, name, record.secondary, SecondaryStatus.UPLOADING, f"Uploading {what}")
    if spec.processing is not None:
        store.update(name, exit_message=upload_outputs(spec, provisioned, settings))
        return
    with tempfile.TemporaryDirectory(prefix="dockyard-persist-") as tmp:
        unpacked = _unpack_parts(spec, parts, os.path.join(tmp, "parts"), settings)
        plan = plan_persist(spec, {h.host: h.scratch for h in provisioned.hosts}, unpacked)
        for sources, uri in ((plan.model_sources, plan.model_uri), (plan.output_sources, plan.output_uri)):
            spot.check(settings, name)  # capacity may be taken back mid-upload
            archive = os.path.join(tmp, uri.rsplit("/", 1)[1])
            count, clashes = pack(sources, archive)
            if clashes:
                job_log.report(
                    settings.home,
                    name,
                    f"{len(clashes)} file(s) exist on several hosts; kept the lowest host's: {', '.join(clashes[:5])}",
                    logging.WARNING,
                )
            size = os.path.getsize(archive)
            storage.upload_file(archive, uri, settings.s3_endpoint_url)
            job_log.report(settings.home, name, f"uploaded {uri} ({count} files, {size / 1e6:.2f} MB)")
    for part in parts:
        for kind in (MODEL, OUTPUT):
            storage.delete(archive_uri(spec, part.attempt, part.host, kind), settings.s3_endpoint_url)
    store.update(name, model_artifacts=plan.model_uri, output_artifacts=plan.output_uri)
