"""The processing flow: one processing job, through the same stages as a training job.

python -m flows.process JOB.yaml      (YAML or JSON; a CreateProcessingJob body works too)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prefect import flow

from dockyard.record import describe_processing
from dockyard.settings import Settings
from flows.train import run_job, run_name
from tasks.validate import processing_job, read_job_file


@flow(
    name="process",
    flow_run_name=run_name("processing_job_name", "ProcessingJobName", "training_job_name", default="process"),
    log_prints=True,
)
def process(job: dict[str, Any] | str) -> dict[str, Any]:
    """Run one processing job to a final status; returns its DescribeProcessingJob record.

    `job` is the spec as a mapping (snake_case, or a CreateProcessingJob body), or the path of
    a YAML or JSON file holding one. Raises JobSpecError, creating nothing, when it cannot run here.
    """
    settings = Settings.from_env(os.environ)
    doc = read_job_file(job) if isinstance(job, str) else job
    if "processing" not in doc:  # else the command line's (or the API's) check made it training-shaped
        doc = processing_job(doc, settings).model_dump(mode="json")
    return describe_processing(run_job(doc, settings))


if __name__ == "__main__":
    # `python -m flows.process` hands over to the command line, which imports this module.
    from cli.process import main

    sys.exit(main())
