"""Command-line entry points for the flows: argument parsing, exit codes, output.

Exit codes: 0 Completed, 1 Failed, 2 the spec cannot run (nothing created),
3 Stopped (by request, Ctrl-C or a stopping condition).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dockyard.errors import DockyardError, JobSpecError
from dockyard.loading import looks_like_sagemaker_request
from dockyard.settings import Settings

EXIT_CODES = {"Completed": 0, "Failed": 1, "Stopped": 3}


def _say(message: str) -> None:
    print(f"dockyard: {message}", file=sys.stderr, flush=True)


def read_job_file(path: str) -> dict[str, Any]:
    """Raises: JobSpecError when the file is missing or is not a mapping."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobSpecError(f"{path}: cannot read the job file ({exc.strerror}) — check the path") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"{path}: not valid YAML or JSON ({exc}) — fix the syntax") from None
    if not isinstance(doc, dict):
        raise JobSpecError(f"{path}: must hold a mapping of job fields — see the spec reference in README.md")
    return doc


def summary(body: dict[str, Any]) -> str:
    lines = [f"{body['TrainingJobName']}: {body['TrainingJobStatus']} ({body.get('SecondaryStatus')})"]
    if body.get("FailureReason"):
        lines.append(f"  FailureReason: {body['FailureReason']}")
    for t in body.get("SecondaryStatusTransitions", []):
        lines.append(f"  {t['StartTime'][11:19]}  {t['Status']:<26} {t['StatusMessage']}")
    for m in body.get("FinalMetricDataList", []):
        lines.append(f"  metric {m['MetricName']} = {m['Value']:g}")
    lines.append(
        f"  TrainingTimeInSeconds: {body.get('TrainingTimeInSeconds')}  "
        f"BillableTimeInSeconds: {body.get('BillableTimeInSeconds')}"
    )
    if body.get("ModelArtifacts"):
        lines.append(f"  model:  {body['ModelArtifacts']['S3ModelArtifacts']}")
    if body.get("OutputArtifacts"):
        lines.append(f"  output: {body['OutputArtifacts']}")
    return "\n".join(lines)


def run_training(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.train", description="Run one managed training job on the local Docker engine."
    )
    parser.add_argument("job_file", help="job spec (YAML or JSON), or a SageMaker CreateTrainingJob body")
    parser.add_argument("--name", help="training_job_name to use (overrides the file's)")
    parser.add_argument("--json", action="store_true", help="print the final record as JSON")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    home = str(settings.home)
    from tasks.validate import check_spec

    try:
        doc = read_job_file(args.job_file)
        if args.name:
            doc["TrainingJobName" if looks_like_sagemaker_request(doc) else "training_job_name"] = args.name
        spec = check_spec(doc, home, settings.s3_endpoint_url)
    except JobSpecError as exc:
        _say(f"the job spec cannot run ({args.job_file}):")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except DockyardError as exc:
        _say(str(exc))
        return 1
    _say(f"training job {spec.training_job_name}: log at {settings.job_dir(spec.training_job_name) / 'job.log'}")
    body = _run_flow(spec.model_dump(mode="json"), home)
    if body is None:
        return 1
    print(json.dumps(body, indent=2) if args.json else summary(body))
    return EXIT_CODES.get(body["TrainingJobStatus"], 1)


def _run_flow(spec: dict[str, Any], home: str) -> dict[str, Any] | None:
    from prefect.context import refresh_global_settings_context

    from flows.train import train
    from infra import prefect_api

    # Every Prefect client in this process (threads and exit-time flushes
    # included) must use this API, never start an ephemeral one.
    os.environ["PREFECT_API_URL"] = prefect_api.ensure_api(home, _say)
    refresh_global_settings_context()
    # SIGTERM to the CLI stops the job gracefully, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = datetime.now(UTC)
    state = train(spec, return_state=True)
    if state.is_completed():
        return dict(state.result())
    _say(f"the training flow ended {state.type.value} after {(datetime.now(UTC) - started).seconds} s: {state.message}")
    return None
