"""Processing jobs through the same stages as training jobs, run as users run them
(`python -m flows.process`): inputs at the local paths they name, the config files a
processing container reads, outputs uploaded as folders (after a failure too), and the
ExitMessage and FailureReason SageMaker reports."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import ROOT, start_module, store_of, unique, wait_for_status, write_files

pytestmark = pytest.mark.integration

# What the container runs: report what it sees, then exit as told by its first argument.
SCRIPT = """
import json, os, sys
root = "/opt/ml/processing/input/data"
seen = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
report = {
    "files": seen,
    "config": json.load(open("/opt/ml/config/processingjobconfig.json")),
    "resource": json.load(open("/opt/ml/config/resourceconfig.json")),
    "env": os.environ.get("MY_VAR"),
    "sm_vars": sorted(k for k in os.environ if k.startswith("SM_")),
}
os.makedirs("/opt/ml/processing/output/nested", exist_ok=True)
json.dump(report, open("/opt/ml/processing/output/nested/report.json", "w"))
open("/opt/ml/output/message", "w").write(sys.argv[2])
sys.exit(int(sys.argv[1]))
"""


def processing_job(image: str, data: Path, out: Path, exit_code: int, message: str) -> dict[str, Any]:
    return {
        "processing_job_name": unique("proc"),
        "app_specification": {
            "image_uri": image,
            "container_entrypoint": ["python3", "-c", SCRIPT],
            "container_arguments": [str(exit_code), message],
        },
        "environment": {"MY_VAR": "from-the-spec"},
        "processing_inputs": [
            {
                "input_name": "dataset",
                "s3_input": {"s3_uri": f"file://{data}", "local_path": "/opt/ml/processing/input/data"},
            }
        ],
        "processing_output_config": {
            "outputs": [
                {
                    "output_name": "report",
                    "s3_output": {"s3_uri": f"file://{out}", "local_path": "/opt/ml/processing/output"},
                }
            ]
        },
    }


def process(spec: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / f"{spec['processing_job_name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [sys.executable, "-m", "flows.process", str(path), "--json"], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.usefixtures("home")
def test_a_processing_job_sees_its_inputs_and_config_and_its_outputs_are_uploaded_even_when_it_fails(
    test_images: dict[str, str], tmp_path: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    write_files(data, {"a.csv": "1,2\n", "sub/b.csv": "3,4\n"})
    spec = processing_job(test_images["probe"], data, out / "ok", 0, "all rows read")
    done = process(spec, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(done.stdout)
    assert (body["ProcessingJobStatus"], body["ExitMessage"]) == ("Completed", "all rows read")
    assert body["ProcessingJobArn"].endswith(f":processing-job/{spec['processing_job_name']}")
    assert body["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    assert "SecondaryStatus" not in body and "TrainingJobName" not in body
    report = json.loads((out / "ok/nested/report.json").read_text())
    assert report["files"] == ["a.csv", "sub/b.csv"]
    assert report["config"]["ProcessingJobName"] == spec["processing_job_name"]
    assert report["config"]["ProcessingInputs"][0]["S3Input"]["S3DownloadMode"] == "StartOfJob"
    assert (report["resource"]["current_host"], report["resource"]["hosts"]) == ("algo-1", ["algo-1"])
    assert (report["env"], report["sm_vars"]) == ("from-the-spec", [])  # the job's environment, no SM_*

    failing = processing_job(test_images["probe"], data, out / "failed", 3, "row 7 is malformed")
    failed = process(failing, tmp_path)
    assert failed.returncode == 1, failed.stderr[-3000:]
    body = json.loads(failed.stdout)
    assert body["ProcessingJobStatus"] == "Failed"
    assert body["FailureReason"].startswith("AlgorithmError: row 7 is malformed")
    assert body["ExitMessage"] == "row 7 is malformed"
    assert (out / "failed/nested/report.json").is_file()  # what it wrote before failing, uploaded


@pytest.mark.usefixtures("home")
def test_a_processing_spec_that_cannot_run_exits_2_naming_the_field(
    test_images: dict[str, str], tmp_path: Path
) -> None:
    spec = processing_job(test_images["probe"], tmp_path, tmp_path / "out", 0, "")
    spec["processing_inputs"][0]["s3_input"]["local_path"] = "/tmp/data"
    refused = process(spec, tmp_path)
    assert refused.returncode == 2
    assert "processing_inputs[0].s3_input.local_path" in refused.stderr
    assert "must be a folder under /opt/ml/processing/" in refused.stderr
    (tmp_path / "empty").mkdir()
    spec = processing_job(test_images["probe"], tmp_path / "empty", tmp_path / "out", 0, "")
    nothing = process(spec, tmp_path)
    assert nothing.returncode == 2  # named as the user wrote it, not as the stages carry it
    assert "processing_inputs[0].s3_input.s3_uri: no objects at" in nothing.stderr, nothing.stderr


def test_a_processing_job_stopped_midway_ends_stopped_with_what_it_wrote_uploaded(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    write_files(tmp_path / "data", {"in.csv": "1\n"})
    spec = processing_job(test_images["probe"], tmp_path / "data", tmp_path / "out", 0, "")
    spec["app_specification"] = {
        "image_uri": test_images["probe"],
        "container_entrypoint": ["python3", "-c", SLEEPER],
    }
    path = tmp_path / "sleeper.yaml"
    path.write_text(yaml.safe_dump(spec))
    running = start_module("flows.process", path)
    try:
        wait_for_status(home, spec["processing_job_name"], "Training", timeout=300)
        store_of(home).request_stop(spec["processing_job_name"], "the test stops it")
        out, err = running.communicate(timeout=300)
    finally:
        running.kill()
    body = json.loads(out)
    assert body["ProcessingJobStatus"] == "Stopped", err[-3000:]
    assert (tmp_path / "out" / "partial.txt").read_text() == "half done"


# Writes an output, then works until stopped.
SLEEPER = (
    "import time; open('/opt/ml/processing/output/partial.txt', 'w').write('half done'); print('working', flush=True);"
    "time.sleep(600)"
)


@pytest.mark.usefixtures("home")
def test_a_pipe_input_streams_its_objects_through_a_fifo_gzip_ones_decompressed(
    test_images: dict[str, str], tmp_path: Path
) -> None:
    write_files(tmp_path / "plain", {"a.csv": "1,2\n", "b.csv": "3,4\n"})
    (tmp_path / "zipped").mkdir()
    (tmp_path / "zipped" / "c.csv.gz").write_bytes(gzip.compress(b"5,6\n"))
    spec = processing_job(test_images["probe"], tmp_path / "plain", tmp_path / "out", 0, "")
    read = (
        "import os, stat; root = '/opt/ml/processing/input/'; out = open('/opt/ml/processing/output/read.txt', 'w')\n"
        "for name in ('plain_0', 'zipped_0'):\n"
        "    assert stat.S_ISFIFO(os.stat(root + name).st_mode), name\n"
        "    out.write(name + '=' + open(root + name).read())\n"
        "print(sorted(os.listdir(root)))"
    )
    spec["app_specification"] = {"image_uri": test_images["probe"], "container_entrypoint": ["python3", "-c", read]}
    spec["processing_inputs"] = [
        {"input_name": name, "s3_input": {"s3_uri": f"file://{tmp_path / name}", "s3_input_mode": "Pipe",
                                          "local_path": f"/opt/ml/processing/input/{name}", **extra}}
        for name, extra in (("plain", {}), ("zipped", {"s3_compression_type": "Gzip"}))
    ]  # fmt: skip
    done = process(spec, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads(done.stdout)["ProcessingJobStatus"] == "Completed"
    assert (tmp_path / "out" / "read.txt").read_text() == "plain_0=1,2\n3,4\nzipped_0=5,6\n"


def test_a_continuous_output_is_uploaded_while_the_job_runs(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    write_files(tmp_path / "data", {"in.csv": "1\n"})
    spec = processing_job(test_images["probe"], tmp_path / "data", tmp_path / "out", 0, "")
    spec["app_specification"] = {"image_uri": test_images["probe"], "container_entrypoint": ["python3", "-c", SLEEPER]}
    spec["processing_output_config"]["outputs"][0]["s3_output"]["s3_upload_mode"] = "Continuous"
    path = tmp_path / "continuous.yaml"
    path.write_text(yaml.safe_dump(spec))
    running = start_module("flows.process", path)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "out" / "partial.txt").exists():  # uploaded once written, the job still running
            assert running.poll() is None and time.monotonic() < deadline, running.communicate(timeout=30)
            time.sleep(0.2)
        assert store_of(home).get(spec["processing_job_name"]).status.primary.value == "InProgress"
        store_of(home).request_stop(spec["processing_job_name"], "the test has seen enough")
        out, err = running.communicate(timeout=300)
    finally:
        running.kill()
    assert json.loads(out)["ProcessingJobStatus"] == "Stopped", err[-3000:]
    assert (tmp_path / "out" / "partial.txt").read_text() == "half done"
