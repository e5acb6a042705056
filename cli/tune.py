"""`python -m flows.tune` and `dockyard tune`: run one hyperparameter tuning job."""

from __future__ import annotations

import argparse
import json
import os
import sys

from cli.render import EXIT_CODES, say, spec_problems, tuning_summary
from cli.session import skip_final_collection, use_prefect
from dockyard import secrets
from dockyard.errors import JobSpecError
from dockyard.settings import Settings
from flows.tune import tune
from tasks.tuning import check_tuning_doc
from tasks.validate import read_job_file


def run_tuning(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.tune", description="Run a hyperparameter tuning job.")
    parser.add_argument("tuning_file", help="tuning spec (YAML or JSON), or a CreateHyperParameterTuningJob body")
    parser.add_argument("--json", action="store_true", help="print the tuning record as JSON")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    try:
        doc = read_job_file(args.tuning_file)
        if secrets.mentioned(doc.get("training_job_definition") or doc.get("TrainingJobDefinition") or {}):
            use_prefect(str(settings.home))  # they live in Prefect's Secret blocks: the API first
        spec = check_tuning_doc(doc, settings)
    except JobSpecError as exc:
        return spec_problems(f"the tuning spec ({args.tuning_file})", exc)
    use_prefect(str(settings.home))
    state = tune(spec.model_dump(mode="json"), return_state=True)  # its secrets as references to their blocks
    if not state.is_completed():
        say(f"the tuning flow ended {state.type.value}: {state.message}")
        return 1
    body = dict(state.result())
    print(json.dumps(body, indent=2) if args.json else tuning_summary(body))
    skip_final_collection()
    return EXIT_CODES.get(body["HyperParameterTuningJobStatus"], 1)


def main(argv: list[str] | None = None) -> int:
    return run_tuning(sys.argv[1:] if argv is None else argv)
