"""Stage 5, run: start every host's container with `train`.

Each container gets the platform folders mounted one by one (input
read-only), its resource limits, GPUs when the type has them, the host name
algo-N on the job's network, an init process so SIGTERM arrives, and nothing
more: no privileged mode, no Docker socket.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from dockyard import clarify, contract, script_mode
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import credentials, docker_engine, job_log
from infra.docker_engine import ContainerSpec
from infra.retry import task_retry_options
from tasks.provision import ProvisionPlan
from tasks.stage_data import channel_mounts, code_folder, model_folder
from tasks.status import move_once


def plan_run(
    spec: TrainingJobSpec, provisioned: ProvisionPlan, image: str, credentials: dict[str, str] | None = None
) -> tuple[ContainerSpec, ...]:
    """Every host's container: the platform folders mounted one by one, limits, network, labels;
    `credentials`, the environment that gives them the role's credentials (infra/credentials.py)."""
    algo = spec.algorithm_specification
    entrypoint = algo.container_entrypoint
    command: list[str] | None
    if spec.processing is not None:  # as `docker run --entrypoint`: the image's own, unless given
        command = algo.container_arguments or ([] if entrypoint else None)
    elif entrypoint:
        command = algo.container_arguments or []
    else:
        command = algo.container_arguments or list(contract.DEFAULT_COMMAND)
    plans = []
    served = _served_model(spec)
    for host in provisioned.hosts:
        volumes = _binds(spec, contract.host_layout(host.scratch), provisioned.scratch_root)
        environment = {**host.environment, **(credentials or {})}
        if served is not None:
            environment[clarify.ENDPOINT_VARIABLE] = clarify.ENDPOINT
        plans.append(
            ContainerSpec(
                name=host.container_name,
                hostname=host.host,
                aliases=[host.host],
                image=image,
                entrypoint=entrypoint,
                command=command,
                environment=environment,
                volumes=volumes,
                labels=docker_engine.labels(spec.training_job_name, host.host),
                network=provisioned.network,
                extra_hosts=provisioned.peers,
                nano_cpus=host.nano_cpus,
                mem_limit=host.mem_limit,
                gpu_device_ids=host.gpu_device_ids,
            )
        )
    return tuple(plans)


def _served_model(spec: TrainingJobSpec) -> str | None:
    return spec.processing.served_model_image if spec.processing else None


def plan_shadow(spec: TrainingJobSpec, provisioned: ProvisionPlan) -> ContainerSpec | None:
    """The container that serves a Clarify job's model to its processor (Clarify's shadow endpoint):
    the model's image running `serve`, the model read-only at /opt/ml/model, on the job's network
    as `model`, within the first instance's limits; None for any other job."""
    image = _served_model(spec)
    if image is None:
        return None
    first = provisioned.hosts[0]
    return ContainerSpec(
        name=f"{spec.training_job_name}-{clarify.SHADOW_HOST}",
        hostname=clarify.SHADOW_HOST,
        aliases=[clarify.SHADOW_HOST],
        image=image,
        entrypoint=None,
        command=list(clarify.SERVE_COMMAND),
        environment={},
        volumes={model_folder(provisioned.scratch_root): {"bind": clarify.SERVED_MODEL_DIR, "mode": "ro"}},
        labels=docker_engine.labels(spec.training_job_name, clarify.SHADOW_HOST),
        network=provisioned.network,
        nano_cpus=first.nano_cpus,
        mem_limit=first.mem_limit,
        gpu_device_ids=None,
    )


def _binds(spec: TrainingJobSpec, layout: contract.HostLayout, scratch_root: str) -> dict[str, dict[str, str]]:
    """One container's binds: the platform folders one by one, or a processing job's own."""
    if spec.processing is not None:
        binds = {
            host_path: {"bind": target, "mode": "ro" if read_only else "rw"}
            for host_path, (target, read_only) in contract.processing_mounts(spec, layout).items()
        }
        if spec.processing.analyzed_model is not None and _served_model(spec) is None:  # the processor loads it
            binds[model_folder(scratch_root)] = {"bind": clarify.MODEL_DIR, "mode": "ro"}
        return binds
    volumes = {
        layout.on_host(target): {"bind": target, "mode": "ro" if read_only else "rw"}
        for target, read_only in contract.MOUNTS.values()
    }
    checkpoint_path = spec.checkpoint_config.local_path if spec.checkpoint_config else contract.CHECKPOINT_DIR
    volumes[layout.checkpoints] = {"bind": checkpoint_path, "mode": "rw"}
    if script_mode.code_source(spec):
        volumes[code_folder(scratch_root)] = {"bind": script_mode.CODE_DIR, "mode": "ro"}
    for mount in channel_mounts(spec, scratch_root):  # FastFile and file system channels
        target = f"{contract.INPUT_DATA_DIR}/{mount.channel}"
        volumes[mount.source] = {"bind": target, "mode": "ro" if mount.read_only else "rw"}
    return volumes


@task(name="run", cache_policy=NONE, **task_retry_options())
def run(
    spec: TrainingJobSpec, provisioned: ProvisionPlan, image: str, settings: Settings, as_part: bool = False
) -> dict[str, str]:
    """Create and start every host's container; returns container ids by host.
    `as_part`: for instances on another machine than the orchestrator's, which moves the status."""
    name = spec.training_job_name
    # A retry must not meet the containers of a half-made attempt.
    docker_engine.remove_job_containers(name)
    given = credentials.container_environment(spec, settings)
    if given:
        job_log.report(
            settings.home, name, f"the containers get credentials for {spec.role} at {given[credentials.URI]}"
        )
    shadow = plan_shadow(spec, provisioned)
    if shadow is not None:  # first: the processors wait for it to answer /ping
        docker_engine.start(docker_engine.create_container(shadow))
        job_log.report(settings.home, name, f"Clarify: serving the model from {shadow.image} as {clarify.ENDPOINT}")
    ids = {}
    for host, container in zip(provisioned.hosts, plan_run(spec, provisioned, image, given), strict=True):
        ids[host.host] = docker_engine.create_container(container)
    for container_id in ids.values():
        docker_engine.start(container_id)
    if not as_part:
        move_once(
            settings,
            name,
            {SecondaryStatus.DOWNLOADING, SecondaryStatus.DOWNLOADING_TRAINING_IMAGE},
            SecondaryStatus.TRAINING,
            "Training image download completed. Training in progress."
            if spec.processing is None
            else "Image download completed. Processing in progress.",
        )
    job_log.report(
        settings.home, name, f"started {len(ids)} container(s): {', '.join(f'{h}={i[:12]}' for h, i in ids.items())}"
    )
    return ids
