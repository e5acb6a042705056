"""volume_size_in_gb holds: each instance's /opt/ml is a volume of that size, and
filling it, or staging more than it holds, fails the job saying so."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration.helpers import channel, probe_job, run_job

pytestmark = pytest.mark.integration


def volumes_left(home: str) -> list[str]:
    """Loop mounts or volume images of dockyard's under `home`."""
    with open("/proc/mounts") as table:
        mounted = [line.split()[1] for line in table if line.split()[1].startswith(home)]
    return mounted + [str(p) for p in Path(home).rglob("*.volume")]


def test_a_job_that_fills_its_volume_fails_saying_so_and_writes_no_more(home: str, test_images: dict[str, str]) -> None:
    job = probe_job(home, test_images["probe"], "fill", hyperparameters={"megabytes": "1500"})
    job["resource_config"]["volume_size_in_gb"] = 1
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Failed"
    assert body["FailureReason"].startswith(
        "AlgorithmError: algo-1 ran out of disk: its volume of 1 GB (resource_config.volume_size_in_gb) is full"
    ), body["FailureReason"]
    log = (Path(home) / "jobs" / body["TrainingJobName"] / "job.log").read_text()
    written = re.search(r"wrote (\d+) bytes, then \[Errno 28\] No space left on device", log)
    assert written, log[-2000:]
    assert int(written.group(1)) <= 2**30  # not a byte past the volume
    assert "each on a 1 GB volume" in log
    assert volumes_left(home) == []


def test_input_that_cannot_fit_the_volume_fails_at_downloading_before_any_copy(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "big.bin", "wb") as f:
        f.truncate(1200 * 10**6)  # sparse: costs this machine nothing
    job = probe_job(home, test_images["probe"], "noop", [channel("train", f"file://{tmp_path}/data")])
    job["resource_config"]["volume_size_in_gb"] = 1
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Failed"
    assert body["FailureReason"].startswith(
        "ClientError: input_data_config: algo-1's File-mode input is 1.20 GB, more than its volume of 1 GB"
    ), body["FailureReason"]
    assert [t["Status"] for t in body["SecondaryStatusTransitions"]][-2:] == ["Downloading", "Failed"]
    assert volumes_left(home) == []


def test_a_volume_made_again_on_its_folder_replaces_the_first_and_comes_off_whole(tmp_path: Path) -> None:
    from infra import volumes

    folder = str(tmp_path / "algo-1")
    assert volumes.create(folder, 1) is None
    (Path(folder) / "left.txt").write_text("by a half-done attempt")
    assert volumes.create(folder, 1) is None  # as a retried provision does over what the first left
    assert not (Path(folder) / "left.txt").exists() and len(mounts_on(folder)) == 1  # a fresh one, not a second
    assert volumes.unmount_all(str(tmp_path)) == []
    assert mounts_on(folder) == [] and not os.path.exists(folder + volumes.IMAGE_SUFFIX)


def mounts_on(folder: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4] == folder]
