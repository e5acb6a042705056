"""Command-line entry points for the flows: argument parsing, exit codes, output.

Exit codes: 0 Completed, 1 Failed, 2 the spec cannot run (nothing created),
3 Stopped (by request, Ctrl-C or a stopping condition).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dockyard.errors import DockyardError, JobSpecError
from dockyard.loading import looks_like_sagemaker_request, parse_document
from dockyard.settings import Settings

EXIT_CODES = {"Completed": 0, "Failed": 1, "Stopped": 3}


def _say(message: str) -> None:
    print(f"dockyard: {message}", file=sys.stderr, flush=True)


def read_job_file(path: str) -> dict[str, Any]:
    """Raises: JobSpecError when the file is missing, does not parse or is not a mapping."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobSpecError(f"{path}: cannot read the job file ({exc.strerror}) — check the path") from None
    return parse_document(text, path)


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
    if "SpotSavingsPercent" in body:
        lines.append(
            f"  spot: {len(body.get('SpotInterruptions', []))} interruption(s), saved {body['SpotSavingsPercent']}% "
            f"(${body['SpotSavingsUSD']:.4f}) against on-demand"
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
    parser.add_argument(
        "--spot-simulation",
        metavar="TEXT",
        help="the local spot market, e.g. 'interrupt_at=30; notice=5' (else DOCKYARD_SPOT_SIMULATION)",
    )
    args = parser.parse_args(argv)
    if args.spot_simulation is not None:
        os.environ["DOCKYARD_SPOT_SIMULATION"] = args.spot_simulation
    settings = Settings.from_env(os.environ)
    home = str(settings.home)
    from tasks.validate import check_spec

    try:
        doc = read_job_file(args.job_file)
        if args.name:
            doc["TrainingJobName" if looks_like_sagemaker_request(doc) else "training_job_name"] = args.name
        spec, resumed = check_spec(doc, home, settings.s3_endpoint_url)
    except JobSpecError as exc:
        _say(f"the job spec cannot run ({args.job_file}):")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except DockyardError as exc:
        _say(str(exc))
        return 1
    if resumed:
        _say(f"picking up the unfinished training job {spec.training_job_name}")
    _say(f"training job {spec.training_job_name}: log at {settings.job_dir(spec.training_job_name) / 'job.log'}")
    body = _run_flow(spec.model_dump(mode="json"), home)
    if body is None:
        return 1
    print(json.dumps(body, indent=2) if args.json else summary(body))
    _skip_final_collection()
    return EXIT_CODES.get(body["TrainingJobStatus"], 1)


def _skip_final_collection() -> None:
    """The work is done and written: spare the interpreter's full garbage collection
    at exit (about 1 s with Prefect and MLflow loaded). Exit handlers still run."""
    gc.freeze()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _use_prefect(home: str) -> None:
    """Point every Prefect client in this process (threads and exit-time
    flushes included) at one API, never an ephemeral one; and let SIGTERM stop
    the work gracefully, as Ctrl-C does."""
    from prefect.context import refresh_global_settings_context

    from infra import prefect_api

    os.environ["PREFECT_API_URL"] = prefect_api.ensure_api(home, _say)
    refresh_global_settings_context()
    signal.signal(signal.SIGTERM, _interrupt)


def _run_flow(spec: dict[str, Any], home: str) -> dict[str, Any] | None:
    from flows.train import train
    from infra import prefect_api

    _use_prefect(home)
    started = datetime.now(UTC)
    state = train(spec, return_state=True)
    if state.is_completed():
        return dict(state.result())
    from dockyard.record import describe
    from dockyard.status import is_final
    from infra import records

    name = spec["training_job_name"]
    record = records.load(home, name) if records.exists(home, name) else None
    if record is not None and state.name == "Cancelling" and record.flow_run_id:
        # The job honoured the cancellation and ended Stopped; close the run too.
        prefect_api.mark_cancelled(record.flow_run_id, "the training job stopped")
    if record is not None and is_final(record.status.secondary):
        return describe(record)
    _say(f"the training flow ended {state.type.value} after {(datetime.now(UTC) - started).seconds} s: {state.message}")
    return None


def run_tuning(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.tune", description="Run a hyperparameter tuning job.")
    parser.add_argument("tuning_file", help="tuning spec (YAML or JSON), or a CreateHyperParameterTuningJob body")
    parser.add_argument("--json", action="store_true", help="print the tuning record as JSON")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    home = str(settings.home)
    from tasks.tuning import check_tuning_doc

    try:
        doc = read_job_file(args.tuning_file)
        check_tuning_doc(doc, home, settings.s3_endpoint_url)
    except JobSpecError as exc:
        _say(f"the tuning spec cannot run ({args.tuning_file}):")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    from flows.tune import tune

    _use_prefect(home)
    state = tune(doc, return_state=True)
    if not state.is_completed():
        _say(f"the tuning flow ended {state.type.value}: {state.message}")
        return 1
    body = dict(state.result())
    print(json.dumps(body, indent=2) if args.json else tuning_summary(body))
    _skip_final_collection()
    return EXIT_CODES.get(body["HyperParameterTuningJobStatus"], 1)


def tuning_summary(body: dict[str, Any]) -> str:
    lines = [
        f"{body['HyperParameterTuningJobName']}: {body['HyperParameterTuningJobStatus']}  "
        f"{body['TrainingJobStatusCounters']}"
    ]
    if body.get("FailureReason"):
        lines.append(f"  FailureReason: {body['FailureReason']}")
    for s in body["TrainingJobSummaries"]:
        value = s["FinalHyperParameterTuningJobObjectiveMetric"]
        lines.append(
            f"  {s['TrainingJobName']:<40} {s['TrainingJobStatus']:<10} "
            f"{'-' if value is None else f'{value:.6g}':>12}  {s['TunedHyperParameters']}"
        )
    best = body.get("BestTrainingJob")
    if best:
        lines.append(f"  best: {best['TrainingJobName']} = {best['FinalHyperParameterTuningJobObjectiveMetric']:.6g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The `dockyard` command: train, and the control-plane verbs over job records."""
    from flows.control import add_verbs, control

    parser = argparse.ArgumentParser(prog="dockyard", description="Managed training jobs on your own hardware.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="run a training job (as python -m flows.train)", add_help=False)
    sub.add_parser("tune", help="run a tuning job (as python -m flows.tune)", add_help=False)
    add_verbs(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return run_training(argv[1:])
    if argv[:1] == ["tune"]:
        return run_tuning(argv[1:])
    args = parser.parse_args(argv)
    return control(args, str(Settings.from_env(os.environ).home))
