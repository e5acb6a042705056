"""The `dockyard` command: train and tune, and the control-plane verbs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cli import algorithms, catalog, hosts, jobs, server
from dockyard.errors import DockyardError, JobSpecError
from dockyard.settings import Settings

# `train` and `tune` are imported only when they run: they load Prefect
# (about 1.5 s), which `dockyard jobs list` has no need of.
_RUNNERS = {
    "train": "cli.train", "tune": "cli.tune", "process": "cli.process", "serve": "cli.serve", "worker": "cli.worker",
}  # fmt: skip
_VERBS = {
    "jobs": jobs.jobs,
    "search": catalog.search,
    "models": catalog.models,
    "server": server.server,
    "hosts": hosts.hosts,
    "algorithms": algorithms.algorithms,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dockyard", description="Managed training jobs on your own hardware.")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="run a training job (as python -m flows.train)", add_help=False)
    sub.add_parser("tune", help="run a tuning job (as python -m flows.tune)", add_help=False)
    sub.add_parser("process", help="run a processing job (as python -m flows.process)", add_help=False)
    sub.add_parser(
        "serve", help="serve SageMaker's API for your SageMaker code (dockyard serve --help)", add_help=False
    )
    sub.add_parser("worker", help="make this machine a host of the fleet (dockyard worker --help)", add_help=False)
    jobs.add_verbs(sub)
    hosts.add_verbs(sub)
    catalog.add_verbs(sub)
    server.add_verbs(sub)
    algorithms.add_verbs(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run `dockyard ARGV`; exit 2 for a bad query, 1 for anything else that went wrong."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _RUNNERS:
        runner = importlib.import_module(_RUNNERS[argv[0]])
        return int(runner.main(argv[1:]))
    args = parser().parse_args(argv)
    try:
        return _VERBS[args.command](args, Settings.from_env(os.environ))
    except JobSpecError as exc:
        for problem in exc.problems:
            print(f"dockyard: {problem}", file=sys.stderr)
        return 2
    except DockyardError as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
