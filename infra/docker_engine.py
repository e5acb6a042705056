"""The Docker engine adapter: networks, containers, images, clean-up.

Every function builds its client inside (local socket, DOCKER_HOST, ssh://)
and takes plain values. Everything dockyard creates carries the labels from
`labels()`, so `remove_job_objects` can find it again.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import docker
import docker.errors
from docker.types import DeviceRequest, EndpointConfig
from pydantic import BaseModel, ConfigDict

from dockyard.errors import InfraError, TransientInfraError
from dockyard.rules import HostFacts

MANAGED_LABEL = "dockyard.managed"
JOB_LABEL = "dockyard.job"
HOST_LABEL = "dockyard.host"

log = logging.getLogger("dockyard.docker")


@functools.cache
def client(timeout: int = 60) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (default: the local socket),
    made once per process and timeout: making one asks the engine its version.

    Raises:
        TransientInfraError: the engine does not answer.
    """
    try:
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise TransientInfraError(f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST") from exc


def answers() -> bool:
    """Whether the engine answers a ping within 10 s."""
    try:
        return bool(client(timeout=10).ping())
    except (TransientInfraError, docker.errors.DockerException, OSError):
        return False


def labels(job_name: str, host: str | None = None) -> dict[str, str]:
    out = {MANAGED_LABEL: "true", JOB_LABEL: job_name}
    if host:
        out[HOST_LABEL] = host
    return out


def host_facts() -> HostFacts:
    """CPUs, memory and GPUs of the machine the engine runs on."""
    info = client().info()
    runtimes = info.get("Runtimes") or {}
    gpus = len(glob.glob("/dev/nvidia[0-9]*")) if "nvidia" in runtimes or glob.glob("/dev/nvidia0") else 0
    return HostFacts(cpus=int(info.get("NCPU", 1)), memory_bytes=int(info.get("MemTotal", 0)), gpus=gpus)


def create_network(name: str, job_name: str, internal: bool) -> str:
    """A bridge network of the job's own. `internal` (network isolation): no route out, and
    the bridge gets no address on the host (an internal bridge's gateway address is the
    host's own, so without this its containers reach every service the host listens on)."""
    options = {"com.docker.network.bridge.inhibit_ipv4": "true"} if internal else None
    net = client().networks.create(
        name, driver="bridge", internal=internal, options=options, labels=labels(job_name), check_duplicate=True
    )
    return str(net.id)


def image_id(ref: str) -> str | None:
    """The local image's id (sha256 of its config), or None when it is not here."""
    try:
        image = client().images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    return str(image.id)


def repo_digest(ref: str) -> str | None:
    try:
        image = client().images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    digests = image.attrs.get("RepoDigests") or []
    return str(digests[0]) if digests else str(image.id)


def image_digests(ref: str) -> list[str]:
    """The local image's id and its registry digests (`repository@sha256:...`, one for each
    repository it was pushed to or pulled from); [] when it is not here."""
    try:
        image = client().images.get(ref)
    except docker.errors.ImageNotFound:
        return []
    return [str(image.id), *(str(d) for d in image.attrs.get("RepoDigests") or [])]


def image_labels(ref: str) -> dict[str, str]:
    """The local image's labels.

    Raises:
        InfraError: the image is not here.
    """
    try:
        return dict(client().images.get(ref).labels)
    except docker.errors.ImageNotFound:
        raise InfraError(f"image {ref} is not here — pull it first") from None


def remove_image(ref: str) -> None:
    """Untag `ref` (the image goes with its last tag); nothing when it is not here."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        client().images.remove(ref)


def pull(ref: str, auth: dict[str, str] | None, progress: Callable[[str], None]) -> None:
    """Pull `ref`, reporting progress about every two seconds.

    Raises:
        InfraError: the image does not exist or access is denied.
        TransientInfraError: the registry or the engine failed on the way.
    """
    api = client(timeout=600).api
    layers: dict[str, tuple[int, int]] = {}
    last = 0.0
    try:  # the SDK splits a tag (default latest) or a digest off `ref`
        for event in api.pull(ref, stream=True, decode=True, auth_config=auth):
            if "error" in event:
                raise _registry_error(ref, str(event["error"]))
            detail = event.get("progressDetail") or {}
            if event.get("id") and detail.get("total"):
                layers[event["id"]] = (int(detail.get("current", 0)), int(detail["total"]))
            if time.monotonic() - last > 2:
                done = sum(c for c, _ in layers.values())
                total = sum(t for _, t in layers.values())
                progress(f"pulling {ref}: {done / 1e6:.1f}/{total / 1e6:.1f} MB in {len(layers)} layers")
                last = time.monotonic()
    except docker.errors.NotFound as exc:
        raise InfraError(f"image {ref} not found in its registry — check the name and tag") from exc
    except docker.errors.APIError as exc:
        raise _registry_error(ref, str(exc)) from exc


def push(ref: str, auth: dict[str, str] | None) -> str:
    """Push the local image `ref` to its registry; returns the digest the registry gave it.

    Raises:
        InfraError: access is denied.
        TransientInfraError: the registry or the engine failed on the way.
    """
    digest = None
    try:
        for event in client(timeout=600).api.push(ref, stream=True, decode=True, auth_config=auth):
            if "error" in event:
                raise _registry_error(ref, str(event["error"]), "push")
            digest = (event.get("aux") or {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise _registry_error(ref, str(exc.explanation or exc), "push") from exc
    if digest is None:
        raise TransientInfraError(f"pushing {ref} ended without a digest from the registry")
    return str(digest)


def distribution_digest(ref: str, auth: dict[str, str] | None) -> str | None:
    """The digest the registry serves for `ref` (a tag or a digest), asked through the engine
    (with Docker's credentials), pulling nothing; None when it has no such image.

    Raises:
        InfraError: the registry denies access.
        TransientInfraError: the registry or the engine cannot be reached.
    """
    try:
        return str(client().api.inspect_distribution(ref, auth_config=auth)["Descriptor"]["digest"])
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise _registry_error(ref, str(exc.explanation or exc), "check") from exc


def _registry_error(ref: str, text: str, verb: str = "pull") -> Exception:
    lowered = text.lower()
    if any(w in lowered for w in ("not found", "manifest unknown", "unauthorized", "denied")):
        return InfraError(f"cannot {verb} {ref}: {text} — check the image name and registry credentials")
    return TransientInfraError(f"{verb}ing {ref} failed: {text}")


def build(
    context_dir: str,
    tag: str,
    buildargs: dict[str, str],
    progress: Callable[[str], None],
    target: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Build an image from `context_dir`, streaming the build's steps.

    Raises:
        InfraError: the build failed.
    """
    api = client(timeout=1800).api
    image = None
    for event in api.build(
        path=context_dir,
        tag=tag,
        buildargs=buildargs,
        target=target,
        rm=True,
        decode=True,
        labels={MANAGED_LABEL: "true", **(labels or {})},
    ):
        if "error" in event:
            raise InfraError(f"building {tag} from {context_dir} failed: {event['error'].strip()}")
        line = str(event.get("stream", "")).strip()
        if line.startswith("Step "):
            progress(f"building {tag}: {line}")
        if "aux" in event and "ID" in event["aux"]:
            image = event["aux"]["ID"]
    found = image_id(tag)
    if not found:
        raise InfraError(f"building {tag} produced no image (last id {image})")
    return found


class ContainerSpec(BaseModel):
    """One container as the engine is asked to create it."""

    model_config = ConfigDict(frozen=True)

    name: str
    hostname: str
    aliases: list[str]
    image: str
    entrypoint: list[str] | None
    command: list[str] | None
    environment: dict[str, str]
    volumes: dict[str, dict[str, str]]  # host path -> {"bind": container path, "mode": "ro" | "rw"}
    labels: dict[str, str]
    network: str  # "host": the machine's own network (a job spanning machines)
    nano_cpus: int | None
    mem_limit: int | None
    gpu_device_ids: list[str] | None  # None: no GPUs; []: all of them
    extra_hosts: dict[str, str] = {}  # name -> address, in the container's /etc/hosts


# Every training container is confined, each setting against one threat:
# - no-new-privileges: a setuid binary in the image cannot raise a process's rights;
# - of Docker's default capabilities only those ordinary root work inside a container
#   needs (files of other owners, setuid/setgid, signals): no raw sockets (NET_RAW:
#   ARP or DNS spoofing of the other containers on the bridge), no device nodes
#   (MKNOD), no chroot, no binding ports under 1024, no capability or audit tricks;
# - a pids limit: a fork bomb in user code ends that container, not the host;
# - the engine's default seccomp profile (never `unconfined`) and never privileged.
KEPT_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"]
PIDS_LIMIT = 16384  # processes and threads; data loaders with many workers stay far below it


def create_container(spec: ContainerSpec) -> str:
    """Create (not start) a container, with an init process and confined as above; returns its id."""
    gpus = spec.gpu_device_ids
    device_requests = None
    if gpus is not None:
        device_requests = (
            [DeviceRequest(device_ids=gpus, capabilities=[["gpu"]])]
            if gpus
            else [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        )
    engine = client()
    if spec.network == "host":
        networking: dict[str, Any] = {"network_mode": "host"}
    else:
        endpoint = EndpointConfig(engine.api._version, aliases=spec.aliases or None)
        networking = {"network": spec.network, "networking_config": {spec.network: endpoint}}
    container = engine.containers.create(
        spec.image,
        command=spec.command,
        entrypoint=spec.entrypoint,
        name=spec.name,
        hostname=spec.hostname,
        environment=spec.environment,
        labels=spec.labels,
        volumes=spec.volumes,
        nano_cpus=spec.nano_cpus,
        mem_limit=spec.mem_limit,
        extra_hosts=spec.extra_hosts or None,
        init=True,
        privileged=False,
        security_opt=["no-new-privileges:true"],
        cap_drop=["ALL"],
        cap_add=KEPT_CAPABILITIES,
        pids_limit=PIDS_LIMIT,
        device_requests=device_requests,
        detach=True,
        **networking,
    )
    return str(container.id)


def start(container_id: str) -> None:
    client().containers.get(container_id).start()


def wait_for_exit(container_id: str) -> None:
    """Return once the container is not running: the engine answers when it exits (or is gone).
    Returns early, saying nothing, when the engine goes away: callers that must know look at
    `state` as well."""
    try:
        client().api.wait(container_id, timeout=None)  # no request timeout: a job may run for days
    except Exception as exc:  # noqa: BLE001 - the caller's own checks see what became of the container
        log.debug("waiting for %s ended early: %s", container_id[:12], exc)


def state(container_id: str) -> dict[str, Any]:
    """The engine's State of a container (Status, ExitCode, OOMKilled, ...)."""
    c = client(timeout=10).containers.get(container_id)
    return dict(c.attrs.get("State") or {})


def stats(container_id: str) -> dict[str, Any]:
    """The container's counters now: one reading, not the two a second apart that the engine gives by default.

    The query is spelt out: docker-py sends `one-shot=True`, which Docker 20.10
    does not take for true (it answers a second later).
    """
    api = client().api
    answer = api._get(api._url("/containers/{0}/stats", container_id), params={"stream": "false", "one-shot": "true"})
    return api._result(answer, json=True)


def stop(container_id: str, grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL after the grace period (docker stop)."""
    with contextlib.suppress(docker.errors.NotFound):
        client(timeout=int(grace_seconds) + 60).containers.get(container_id).stop(timeout=int(grace_seconds))


def follow_logs(container_id: str, since: datetime | None = None) -> Iterator[bytes]:
    """The container's combined stdout and stderr, from its start or `since`, as it comes."""
    # A client of its own: a long-lived stream must not hold a shared connection.
    c = docker.from_env(timeout=3600).containers.get(container_id)
    yield from c.logs(stream=True, follow=True, stdout=True, stderr=True, since=since)


def environment(container_id: str) -> dict[str, str]:
    """The environment a container was created with."""
    entries = client().containers.get(container_id).attrs.get("Config", {}).get("Env") or []
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def job_containers(job_name: str) -> dict[str, str]:
    """The job's containers, by host name."""
    selector = {"label": [f"{JOB_LABEL}={job_name}", f"{MANAGED_LABEL}=true"]}
    return {
        c.labels.get(HOST_LABEL, c.name): str(c.id)
        for c in client().containers.list(all=True, filters=selector, ignore_removed=True)
    }


def remove_job_containers(job_name: str) -> None:
    """Remove the job's containers, leaving its network."""
    selector = {"label": [f"{JOB_LABEL}={job_name}", f"{MANAGED_LABEL}=true"]}
    for container in client().containers.list(all=True, filters=selector, ignore_removed=True):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def remove_job_objects(job_name: str) -> int:
    """Remove every container and network labelled with `job_name`; returns the count."""
    engine = client()
    removed = 0
    selector = {"label": [f"{JOB_LABEL}={job_name}", f"{MANAGED_LABEL}=true"]}
    for container in engine.containers.list(all=True, filters=selector, ignore_removed=True):
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    for network in engine.networks.list(filters=selector):
        try:
            network.remove()
            removed += 1
        except docker.errors.NotFound:
            pass
    return removed


def list_managed() -> list[dict[str, str]]:
    """Containers and networks dockyard made that still exist."""
    engine = client()
    selector = {"label": f"{MANAGED_LABEL}=true"}
    found = [
        {"kind": "container", "name": c.name, "job": c.labels.get(JOB_LABEL, "")}
        for c in engine.containers.list(all=True, filters=selector, ignore_removed=True)
    ]
    found += [
        {"kind": "network", "name": n.name, "job": (n.attrs.get("Labels") or {}).get(JOB_LABEL, "")}
        for n in engine.networks.list(filters=selector)
    ]
    return found
