"""Stage 4, pull image: a local image, a pulled one, or a built-in built here.

Registry credentials come from Docker's own config (the engine uses it) or,
for ECR hosts, from an ECR token fetched through boto3. A built-in algorithm
whose image is neither local nor pullable is built from infra/images/,
honouring DOCKYARD_BASE_IMAGE.
"""

from __future__ import annotations

import os
import re
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard.algorithm_package import repository
from dockyard.algorithms import ALGORITHMS
from dockyard.errors import InfraError
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import docker_engine, job_log, registries
from infra.job_store import open_store
from infra.retry import task_retry_options
from tasks.status import move

IMAGES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "infra", "images")
ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class PullImagePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    image: str
    registry: str | None  # None: Docker Hub
    ecr_region: str | None
    build_context: str | None  # infra/images/<name> for built-ins
    build_target: str | None = None  # the Dockerfile stage, for a folder that builds several images
    build_args: dict[str, str]


def registry_of(image: str) -> str | None:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def plan_pull_image(spec: TrainingJobSpec, base_image: str | None, images_dir: str = IMAGES_DIR) -> PullImagePlan:
    algo_name = spec.algorithm_specification.builtin_name
    if algo_name:
        algo = ALGORITHMS[algo_name]
        return PullImagePlan(
            image=algo.image,
            registry=None,
            ecr_region=None,
            build_context=os.path.join(images_dir, algo.image_dir),
            build_target=algo.build_target,
            build_args={"BASE_IMAGE": base_image} if base_image else {},
        )
    return plan_image(spec.image)


def plan_image(image: str) -> PullImagePlan:
    """Pulling an image of the user's own (or making sure it is here)."""
    registry = registry_of(image)
    match = ECR_HOST.match(registry or "")
    return PullImagePlan(
        image=image, registry=registry, ecr_region=match.group(1) if match else None, build_context=None, build_args={}
    )


def registry_auth(image: str) -> dict[str, str] | None:
    """Credentials for the image's registry beyond Docker's own config: an ECR token for ECR hosts."""
    region = plan_image(image).ecr_region
    return registries.ecr_auth(region) if region else None


def check_pinned(algorithm: str, pinned: str, image: str, digests: list[str]) -> None:
    """That the image obtained as `image` (its id and registry digests: `digests`) is the one the
    algorithm pins.

    Raises:
        InfraError: it is another image, or none.
    """
    if pinned.lower() in {d.rpartition("@")[2].lower() for d in digests}:
        return
    raise InfraError(
        f"algorithm {algorithm} pins its image at {pinned}, but the image obtained as {image} is "
        f"{', '.join(digests) or 'not here'} — the registry serves another image under that reference: "
        "ask the algorithm's publisher for a fresh export, delete the algorithm and import that"
    )


def obtain(plan: PullImagePlan, report: Any) -> str:
    """Make the planned image present locally; returns its digest.

    Raises:
        InfraError: the image cannot be found, pulled or built.
    """
    if docker_engine.image_id(plan.image):
        report(f"using local image {plan.image}")
    elif plan.build_context:
        report(
            f"building built-in image {plan.image} from {plan.build_context}"
            + (f" on {plan.build_args['BASE_IMAGE']}" if plan.build_args else "")
        )
        docker_engine.build(plan.build_context, plan.image, plan.build_args, report, plan.build_target)
    else:
        report(f"pulling {plan.image}")
        docker_engine.pull(plan.image, registry_auth(plan.image), report)
    digest = docker_engine.repo_digest(plan.image)
    if digest is None:
        raise InfraError(f"image {plan.image} is not present after pulling — check the engine")
    return digest


@task(name="pull-image", cache_policy=NONE, **task_retry_options())
def pull_image(spec: TrainingJobSpec, settings: Settings, as_part: bool = False) -> str:
    """Get the training image; returns the reference to run (its digest is recorded).
    `as_part`: for instances on another machine than the orchestrator's, which moves the status."""
    store = open_store(settings)
    name = spec.training_job_name
    record = store.get(name)
    if not as_part and record.secondary is not SecondaryStatus.DOWNLOADING_TRAINING_IMAGE:  # else a retry
        move(
            settings,
            name,
            record.secondary,
            SecondaryStatus.DOWNLOADING_TRAINING_IMAGE,
            "Downloading the training image" if spec.processing is None else "Downloading the image",
        )
    plan = plan_pull_image(spec, settings.base_image)

    def report(message: str) -> None:
        job_log.report(settings.home, name, message)

    registered = spec.registered_algorithm
    pinned = registered.training_specification.training_image_digest if registered else None
    if registered and pinned:  # its own image, whatever its tag names now: by id here, else by digest from a registry
        plan = plan_image(pinned if docker_engine.image_id(pinned) else f"{repository(plan.image)}@{pinned}")
        report(f"algorithm {registered.algorithm_name} pins its image at {pinned}")
    digest = obtain(plan, report)
    if registered and pinned:
        check_pinned(registered.algorithm_name, pinned, plan.image, docker_engine.image_digests(plan.image))
        report(f"checked: {plan.image} is the image algorithm {registered.algorithm_name} pins")
    store.update(name, training_image=plan.image, training_image_digest=digest)
    report(f"image {plan.image} is {digest}")
    model = spec.processing.analyzed_model if spec.processing else None
    if model is not None and model.image is not None:  # the image that serves a Clarify job's model
        report(f"Clarify: the model's image {model.image} is {obtain(plan_image(model.image), report)}")
    return plan.image
