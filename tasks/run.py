"""Stage 5, run: start every host's container with `train`.

Each container gets the platform folders mounted one by one (input
read-only), its resource limits, GPUs when the type has them, the host name
algo-N on the job's network, an init process so SIGTERM arrives, and nothing
more: no privileged mode, no Docker socket.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard import contract
from dockyard.spec import InputMode, TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import docker_engine, records
from infra.retry import task_retry_options
from tasks.provision import ProvisionPlan, host_dirs, plan_provision
from tasks.stage_data import channel_mounts

# Statuses in which a job's containers may still hold its work.
REATTACHABLE = {SecondaryStatus.TRAINING, SecondaryStatus.STOPPING, SecondaryStatus.UPLOADING}


class ContainerPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str
    container_name: str
    hostname: str
    aliases: list[str]
    image: str
    entrypoint: list[str] | None
    command: list[str] | None
    environment: dict[str, str]
    volumes: dict[str, dict[str, str]]
    labels: dict[str, str]
    network: str
    nano_cpus: int | None
    mem_limit: int | None
    gpu_device_ids: list[str] | None


def plan_run(spec: TrainingJobSpec, provisioned: ProvisionPlan, image: str) -> tuple[ContainerPlan, ...]:
    algo = spec.algorithm_specification
    entrypoint = algo.container_entrypoint
    if entrypoint:
        command = algo.container_arguments or []
    else:
        command = algo.container_arguments or list(contract.DEFAULT_COMMAND)
    checkpoint_path = spec.checkpoint_config.local_path if spec.checkpoint_config else contract.CHECKPOINT_DIR
    plans = []
    for host in provisioned.hosts:
        dirs = host_dirs(host.scratch)
        volumes = {
            dirs[part]: {"bind": target, "mode": "ro" if read_only else "rw"}
            for part, (target, read_only) in contract.MOUNTS.items()
        }
        volumes[dirs["checkpoints"]] = {"bind": checkpoint_path, "mode": "rw"}
        for mount in channel_mounts(spec, provisioned.scratch_root):  # FastFile and file system channels
            target = f"{contract.INPUT_DATA_DIR}/{mount.channel}"
            volumes[mount.source] = {"bind": target, "mode": "ro" if mount.read_only else "rw"}
        plans.append(
            ContainerPlan(
                host=host.host,
                container_name=host.container_name,
                hostname=host.host,
                aliases=[host.host],
                image=image,
                entrypoint=entrypoint,
                command=command,
                environment=host.environment,
                volumes=volumes,
                labels=docker_engine.labels(spec.training_job_name, host.host),
                network=provisioned.network,
                nano_cpus=host.nano_cpus,
                mem_limit=host.mem_limit,
                gpu_device_ids=host.gpu_device_ids,
            )
        )
    return tuple(plans)


@task(name="run", cache_policy=NONE, **task_retry_options())
def run(spec_json: dict[str, Any], provision_json: dict[str, Any], image: str, home: str) -> dict[str, str]:
    """Create and start every host's container; returns container ids by host."""
    logger = get_run_logger()
    spec = TrainingJobSpec.model_validate(spec_json)
    provisioned = ProvisionPlan.model_validate(provision_json)
    name = spec.training_job_name
    # A retry must not meet the containers of a half-made attempt.
    docker_engine.remove_job_containers(name)
    ids = {}
    for plan in plan_run(spec, provisioned, image):
        ids[plan.host] = docker_engine.create_container(plan.model_dump())
    for container_id in ids.values():
        docker_engine.start(container_id)
    records.transition(home, name, SecondaryStatus.TRAINING, "Training image download completed. Training in progress.")
    logger.info(f"started {len(ids)} container(s): {', '.join(f'{h}={i[:12]}' for h, i in ids.items())}")
    return ids


@task(name="reattach", cache_policy=NONE, **task_retry_options())
def reattach(spec_json: dict[str, Any], home: str) -> dict[str, Any] | None:
    """Pick up a job whose orchestrator died: its containers, if they still
    exist, are watched again ({"provisioned", "containers"}); otherwise it
    restarts from its checkpoints (None)."""
    spec = TrainingJobSpec.model_validate(spec_json)
    name = spec.training_job_name
    record = records.load(home, name)
    found = docker_engine.job_containers(name)
    hosts = contract.host_names(spec.resource_config.instance_count)
    # Pipe channels were fed by the dead orchestrator's threads: such a job restarts instead.
    piped = any(spec.channel_mode(c) is InputMode.PIPE for c in spec.input_data_config)
    if record.status.secondary in REATTACHABLE and sorted(found) == hosts and not piped:
        provisioned = plan_provision(spec, docker_engine.host_facts(), os.path.join(home, "scratch"))
        records.append_log(home, name, f"reattached to {len(found)} running container(s)")
        return {"provisioned": provisioned.model_dump(mode="json"), "containers": found}
    records.end_attempt(home, name, "orchestrator restarted")
    if record.status.secondary is not SecondaryStatus.RESTARTING:
        records.transition(
            home, name, SecondaryStatus.RESTARTING, "The orchestrator restarted; restarting from the last checkpoint"
        )
    return None
