"""`dockyard algorithms create FILE | list | describe NAME | delete NAME | export NAME | import SOURCE`:
the registry of algorithm specifications (dockyard.algorithm_spec), dockyard's built-ins among them,
and algorithms shared between teams with their images pinned (dockyard.algorithm_package)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from dockyard.algorithm_package import (
    ARTIFACT_FILE,
    ARTIFACT_LABEL,
    IMAGE_FIELD,
    artifact_reference,
    digest_refused,
    package,
    pinned_digest,
    repository,
)
from dockyard.algorithm_spec import BUILTINS, AlgorithmSpec, describe_algorithm
from dockyard.contract import job_arn
from dockyard.errors import DockyardError, FieldProblem, InfraError, JobSpecError, TransientInfraError
from dockyard.loading import build_algorithm, parse_document
from dockyard.settings import Settings
from infra import docker_engine
from infra.job_store import JobStore, now, open_store
from tasks.pull_image import registry_auth
from tasks.validate import read_job_file


def add_verbs(sub: Any) -> None:
    """The algorithms sub-commands, on `dockyard`'s parser."""
    algorithms = sub.add_parser("algorithms", help="register, list, describe and delete algorithms")
    verbs = algorithms.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="register an algorithm (a CreateAlgorithm body, or its snake_case)")
    create.add_argument("file", help="YAML or JSON: algorithm_name, training_specification, ...")
    verbs.add_parser("list", help="the built-ins and the registered algorithms").add_argument(
        "--json", action="store_true"
    )
    describe = verbs.add_parser("describe", help="one algorithm's specification (DescribeAlgorithm's shape)")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true")
    verbs.add_parser("delete", help="unregister an algorithm (jobs that ran it keep their copy)").add_argument("name")
    export = verbs.add_parser("export", help="share an algorithm: its specification, its image pinned at its digest")
    export.add_argument("name")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="FILE", help="write the document to FILE (YAML for .yaml or .yml, else JSON)")
    where.add_argument("--push", action="store_true", help="publish it in the image's registry, beside the image")
    shared = verbs.add_parser("import", help="register a shared algorithm, its image digest checked")
    shared.add_argument("source", help="an exported FILE, or the registry reference `export --push` printed")


def algorithms(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    if args.verb == "create":
        algorithm = build_algorithm(read_job_file(args.file))
        store.create_algorithm(algorithm)
        print(f"registered {algorithm.algorithm_name} ({job_arn(algorithm.algorithm_name, 'algorithm')}): "
              f"train it with algorithm_specification.algorithm_name: {algorithm.algorithm_name}")  # fmt: skip
        return 0
    if args.verb == "list":
        rows = [(a, "built-in") for a in BUILTINS.values()]
        rows += [(a, created.isoformat(timespec="seconds")) for a, created in store.algorithms()]
        if args.json:
            print(json.dumps([{"AlgorithmName": a.algorithm_name, "Image": a.training_specification.training_image,
                               "Registered": when, "Description": a.algorithm_description} for a, when in rows],
                             indent=2))  # fmt: skip
            return 0
        for a, when in rows:
            print(f"{a.algorithm_name:<40} {when:<25} {a.training_specification.training_image}")
        return 0
    if args.verb == "delete":
        if args.name in BUILTINS:
            raise DockyardError(f"'{args.name}' is one of dockyard's built-ins, which cannot be deleted")
        if not store.delete_algorithm(args.name):
            raise DockyardError(f"no algorithm '{args.name}' — dockyard algorithms list shows them")
        print(f"deleted {args.name}; jobs that ran it keep their copy of its specification")
        return 0
    if args.verb == "export":
        return export(store, args.name, args.to)
    if args.verb == "import":
        return import_shared(store, args.source)
    found = store.algorithm(args.name) or ((BUILTINS[args.name], now()) if args.name in BUILTINS else None)
    if found is None:
        raise DockyardError(f"no algorithm '{args.name}' — dockyard algorithms list shows them")
    body = describe_algorithm(found[0], found[1], job_arn(found[0].algorithm_name, "algorithm"))
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    spec = found[0].training_specification
    print(f"{found[0].algorithm_name} (version {found[0].algorithm_version}): {found[0].algorithm_description}")
    print(
        f"  image: {spec.training_image}" + (f" @ {spec.training_image_digest}" if spec.training_image_digest else "")
    )
    print(f"  distributed: {'yes' if spec.supports_distributed_training else 'no'}")
    for c in spec.training_channels:
        print(f"  channel {c.name}{' (required)' if c.is_required else ''}: {', '.join(c.supported_content_types)}; "
              f"{', '.join(c.supported_input_modes)}")  # fmt: skip
    for h in spec.supported_hyper_parameters:
        low, high = h.bounds() if h.numeric_range else (None, None)
        shown = f" {low:g}..{high:g}" if low is not None and high is not None else ""
        values = f" {{{', '.join(h.values)}}}" if h.values else ""
        flags = ", ".join(f for f, on in (("required", h.is_required), ("tunable", h.is_tunable)) if on)
        default = f" = {h.default_value}" if h.default_value is not None else ""
        print(f"  hyperparameter {h.name}: {h.type.value}{shown}{values}{default}" + (f" ({flags})" if flags else ""))
    for o in spec.supported_tuning_job_objective_metrics:
        print(f"  tuning objective: {o.type.value} {o.metric_name}")
    return 0


def export(store: JobStore, name: str, to: str | None) -> int:
    """Write the algorithm, its image pinned at its registry digest, to `to`, or push it beside the image.

    Raises:
        DockyardError: no such algorithm (or a built-in); its image has no registry digest here.
    """
    found = store.algorithm(name)
    if found is None:
        builtin = " (a built-in: every dockyard has it)" if name in BUILTINS else ""
        raise DockyardError(f"no registered algorithm '{name}'{builtin} — dockyard algorithms list shows them")
    algorithm = found[0]
    doc = package(algorithm, registry_digest(algorithm))
    if to:
        Path(to).write_text(yaml.safe_dump(doc, sort_keys=False) if to.endswith((".yaml", ".yml")) else
                            json.dumps(doc, indent=2) + "\n")  # fmt: skip
        print(f"exported {name} to {to}: import it with dockyard algorithms import {to}")
        return 0
    reference = artifact_reference(algorithm)
    digest = publish(doc, reference)
    print(f"published {name} as {reference} ({digest}): import it with dockyard algorithms import {reference}")
    return 0


def registry_digest(algorithm: AlgorithmSpec) -> str:
    """The registry digest of the image the algorithm runs (its pinned one, else its tag's), as
    this Docker engine knows it from a push or a pull.

    Raises:
        DockyardError: the engine knows no digest of it in its repository.
    """
    spec = algorithm.training_specification
    repo, pinned = repository(spec.training_image), spec.training_image_digest
    local = (pinned if docker_engine.image_id(pinned) else f"{repo}@{pinned}") if pinned else spec.training_image
    digests = [d for d in docker_engine.image_digests(local) if d.startswith(f"{repo}@")]
    if not digests:
        raise DockyardError(
            f"algorithm {algorithm.algorithm_name}: its image {local} has no digest in {repo} that this Docker "
            f"engine knows of — push it first (docker push {spec.training_image}), then export again"
        )
    return digests[0].rpartition("@")[2]


def publish(doc: dict[str, Any], reference: str) -> str:
    """Push `doc` to the registry as a one-file image tagged `reference` (the document as its
    file and its label); returns the digest the registry gave it."""
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(f"FROM scratch\nCOPY {ARTIFACT_FILE} /\n")
        Path(context, ARTIFACT_FILE).write_text(json.dumps(doc, indent=2))
        docker_engine.build(context, reference, {}, lambda _: None, labels={ARTIFACT_LABEL: json.dumps(doc)})
    try:
        return docker_engine.push(reference, registry_auth(reference))
    finally:
        docker_engine.remove_image(reference)  # the registry holds it; no stale copy here


def import_shared(store: JobStore, source: str) -> int:
    """Register a shared algorithm from a file or a registry reference, once its pinned image checks out.

    Raises:
        JobSpecError: the document is invalid, pins no digest, or one its registry does not serve.
    """
    algorithm = build_algorithm(read_shared(source))
    published = artifact_reference(algorithm)
    if not is_file(source) and source != published:  # one repository's artifact cannot speak for another's image
        raise JobSpecError([FieldProblem(
            "algorithm_name", f"{source} holds algorithm {algorithm.algorithm_name} (version "
            f"{algorithm.algorithm_version}) of the image {algorithm.training_specification.training_image}, "
            f"which `export --push` publishes as {published}, beside its image, not here",
            "import the reference `dockyard algorithms export --push` printed",
        )])  # fmt: skip
    check_image(algorithm, pinned_digest(algorithm))
    store.create_algorithm(algorithm)
    spec = algorithm.training_specification
    print(f"imported {algorithm.algorithm_name} ({spec.training_image} @ {spec.training_image_digest}): "
          f"train it with algorithm_specification.algorithm_name: {algorithm.algorithm_name}")  # fmt: skip
    return 0


def is_file(source: str) -> bool:
    """Whether an import's source is a file (else a registry reference)."""
    return os.path.exists(source) or source.endswith((".json", ".yaml", ".yml"))


def read_shared(source: str) -> dict[str, Any]:
    """The shared algorithm's document, from a file or from the image `export --push` published.

    Raises:
        JobSpecError: no such file, no such image, or an image that holds no algorithm.
    """
    if is_file(source):
        return read_job_file(source)
    was_here = docker_engine.image_id(source) is not None
    try:
        docker_engine.pull(source, registry_auth(source), lambda _: None)  # a file's worth: no progress
        labels = docker_engine.image_labels(source)
    except InfraError as exc:
        raise JobSpecError(f"{source}: no such file, nor image ({exc}) — give the file `dockyard algorithms export` "
                           "wrote, or the reference it printed") from None  # fmt: skip
    finally:
        if not was_here:
            docker_engine.remove_image(source)
    if ARTIFACT_LABEL not in labels:
        raise JobSpecError(f"{source}: an image without the {ARTIFACT_LABEL} label, not a shared algorithm — "
                           "give the reference `dockyard algorithms export --push` printed")  # fmt: skip
    return parse_document(labels[ARTIFACT_LABEL], source)


def check_image(algorithm: AlgorithmSpec, digest: str) -> None:
    """That the image's registry serves the pinned digest in its repository (or this engine has
    it from there already).

    Raises:
        JobSpecError: the registry has no such image there, or denies access.
        InfraError: the registry cannot be reached: nothing is imported unchecked.
    """
    image = algorithm.training_specification.training_image
    pinned = f"{repository(image)}@{digest}"
    if docker_engine.image_id(pinned):
        return
    try:
        served = docker_engine.distribution_digest(pinned, registry_auth(image))
    except TransientInfraError as exc:
        raise InfraError(
            f"could not ask the registry whether it serves {pinned} ({exc}); nothing was imported — "
            "import again when the registry answers"
        ) from None
    except InfraError as exc:
        raise JobSpecError([FieldProblem(IMAGE_FIELD, f"algorithm {algorithm.algorithm_name}: {exc}")]) from None
    if served != digest:
        raise digest_refused(
            algorithm,
            f"its registry has no image {pinned}",
            "the document does not match the image its publisher pushed: import their export unchanged, "
            "or ask them for a fresh one",
        )
