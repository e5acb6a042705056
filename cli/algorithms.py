"""`dockyard algorithms create FILE | list | describe NAME | delete NAME`: the registry of
algorithm specifications (dockyard.algorithm_spec), dockyard's built-ins among them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dockyard.algorithm_spec import BUILTINS, describe_algorithm
from dockyard.contract import job_arn
from dockyard.errors import DockyardError
from dockyard.loading import build_algorithm
from dockyard.settings import Settings
from infra.job_store import now, open_store
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
