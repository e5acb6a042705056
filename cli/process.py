"""`python -m flows.process` and `dockyard process`: run one processing job from a spec file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cli.render import EXIT_CODES, say, spec_problems
from cli.session import skip_final_collection, use_prefect
from cli.train import run_flow
from dockyard import secrets
from dockyard.errors import DockyardError, JobSpecError
from dockyard.loading import looks_like_sagemaker_request
from dockyard.record import describe_processing
from dockyard.settings import Settings
from flows.process import process
from infra import job_log
from tasks.validate import check_spec, processing_job, read_job_file


def run_processing(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.process", description="Run one processing job on the local Docker engine."
    )
    parser.add_argument("job_file", help="processing job spec (YAML or JSON), or a SageMaker CreateProcessingJob body")
    parser.add_argument("--name", help="processing_job_name to use (overrides the file's)")
    parser.add_argument("--json", action="store_true", help="print the final record as JSON")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    try:
        doc = read_job_file(args.job_file)
        if args.name:
            doc["ProcessingJobName" if looks_like_sagemaker_request(doc) else "processing_job_name"] = args.name
        if secrets.mentioned(doc):  # they live in Prefect's Secret blocks: the API first
            use_prefect(str(settings.home))
        spec, resumed = check_spec(processing_job(doc, settings).model_dump(mode="json"), settings)
    except JobSpecError as exc:
        return spec_problems(f"the processing job spec ({args.job_file})", exc)
    except DockyardError as exc:
        say(str(exc))
        return 1
    name = spec.training_job_name
    if resumed:
        say(f"picking up the unfinished processing job {name}")
    say(f"processing job {name}: log at {job_log.path(settings.home, name)}")
    body = run_flow(process, spec.model_dump(mode="json"), settings, describe_processing)
    if body is None:
        return 1
    print(json.dumps(body, indent=2) if args.json else _summary(body))
    skip_final_collection()
    return EXIT_CODES.get(body["ProcessingJobStatus"], 1)


def _summary(body: dict[str, Any]) -> str:
    lines = [f"{body['ProcessingJobName']}: {body['ProcessingJobStatus']}"]
    for key in ("FailureReason", "ExitMessage"):
        if body.get(key):
            lines.append(f"  {key}: {body[key]}")
    for output in body.get("ProcessingOutputConfig", {}).get("Outputs", []):
        lines.append(f"  {output['OutputName']}: {output['S3Output']['S3Uri']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_processing(sys.argv[1:] if argv is None else argv)
