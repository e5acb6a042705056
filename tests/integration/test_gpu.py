"""The image classifier on a GPU: CUDA, its device request and float16 mixed precision.

These need an NVIDIA GPU and Docker's GPU support: scripts/test runs them only where
`nvidia-smi` answers (they are never collected into a run that has no GPU to give them).
The CPU path of the same code is tested always (test_deep_learning.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, run_job
from tests.integration.test_deep_learning import ic_job, job_log, lst_channels, metric

pytestmark = [pytest.mark.integration, pytest.mark.gpu, pytest.mark.timeout(1800)]


def test_the_image_classifier_trains_on_the_gpu_in_float16_mixed_precision(home: str, tmp_path: Path) -> None:
    data = tmp_path / "digits"
    subprocess.run(
        [sys.executable, str(ROOT / "examples/image-classification-digits/make_data.py"), "--out", str(data)],
        check=True,
    )
    job = ic_job(home, lst_channels(data, "train", "train_lst", "validation", "validation_lst"), epochs=4)
    job["resource_config"]["instance_type"] = "ml.g5.xlarge"  # 1 GPU
    job["hyperparameters"]["precision_dtype"] = "float16"
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    log = job_log(home, body)
    assert "[algo-1] training on cuda:0 (" in log and "in float16, mixed precision" in log, log[-3000:]
    assert metric(body, "validation:accuracy") >= 0.9
