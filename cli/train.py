"""`python -m flows.train` and `dockyard train`: run one training job from a spec file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cli.render import EXIT_CODES, say, spec_problems, summary
from cli.session import skip_final_collection, use_prefect
from dockyard import secrets
from dockyard.errors import DockyardError, JobSpecError
from dockyard.loading import looks_like_sagemaker_request
from dockyard.record import JobRecord, describe
from dockyard.settings import Settings
from flows.train import final_record, train
from infra import job_log, prefect_api
from tasks.validate import check_spec, read_job_file


def run_training(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.train", description="Run one managed training job on the local Docker engine."
    )
    parser.add_argument("job_file", help="job spec (YAML or JSON), or a SageMaker CreateTrainingJob body")
    parser.add_argument("--name", help="training_job_name to use (overrides the file's)")
    parser.add_argument("--json", action="store_true", help="print the final record as JSON")
    parser.add_argument(
        "--spot-simulation",
        metavar="TEXT",
        help="the local spot market, e.g. 'interrupt_at=30; notice=5' (else DOCKYARD_SPOT_SIMULATION)",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    if args.spot_simulation is not None:
        settings = settings.model_copy(update={"spot_simulation": args.spot_simulation})
    try:
        doc = read_job_file(args.job_file)
        if args.name:
            doc["TrainingJobName" if looks_like_sagemaker_request(doc) else "training_job_name"] = args.name
        if secrets.mentioned(doc):  # they live in Prefect's Secret blocks: the API first
            use_prefect(str(settings.home))
        spec, resumed = check_spec(doc, settings)
    except JobSpecError as exc:
        return spec_problems(f"the job spec ({args.job_file})", exc)
    except DockyardError as exc:
        say(str(exc))
        return 1
    if resumed:
        say(f"picking up the unfinished training job {spec.training_job_name}")
    say(f"training job {spec.training_job_name}: log at {job_log.path(settings.home, spec.training_job_name)}")
    body = run_flow(train, spec.model_dump(mode="json"), settings, describe, spot_simulation=args.spot_simulation)
    if body is None:
        return 1
    print(json.dumps(body, indent=2) if args.json else summary(body))
    skip_final_collection()
    return EXIT_CODES.get(body["TrainingJobStatus"], 1)


def run_flow(
    flow: Any,
    spec: dict[str, Any],
    settings: Settings,
    described: Callable[[JobRecord], dict[str, Any]],
    **parameters: Any,
) -> dict[str, Any] | None:
    """A job's flow (train, or process) to its end; the job's final record as `described` renders
    it, or None when the flow broke down."""
    use_prefect(str(settings.home))
    started = datetime.now(UTC)
    state = flow(spec, return_state=True, **parameters)
    record = final_record(spec["training_job_name"], settings)
    if record is not None:
        if state.name == "Cancelling" and record.flow_run_id:
            # The job honoured the cancellation and ended Stopped; close the run too.
            prefect_api.mark_cancelled(record.flow_run_id, f"the {record.kind} job stopped")
        return described(record)
    seconds = (datetime.now(UTC) - started).seconds
    say(f"the {flow.name} flow ended {state.type.value} after {seconds} s: {state.message}")
    return None


def main(argv: list[str] | None = None) -> int:
    return run_training(sys.argv[1:] if argv is None else argv)
