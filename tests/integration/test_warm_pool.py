"""Warm pools on one machine, through real training flows: a job's instances kept after it
ends, taken over by the next job that matches them (its staged data with them), left alone
by one that does not, and ended when their period runs out or is set to 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dockyard.record import describe
from dockyard.settings import Settings
from infra import job_log
from infra.job_store import JobFilter
from tasks.warm_pool import set_keep_alive, sweep
from tests.integration.helpers import ROOT, channel, local, members, probe_job, run_job, store_of, write_files

pytestmark = pytest.mark.integration


def test_a_warm_pool_is_kept_taken_over_by_a_matching_job_with_its_data_and_ended_by_its_period(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_files(data, {"train/a.csv": "1,2\n" * 5000, "train/sub/b.csv": "3,4\n", "other/c.csv": "5,6\n"})
    settings = Settings.from_env(os.environ)
    store = store_of(home)

    def job(prefix: str = "train", keep: int = 600) -> dict[str, Any]:
        return probe_job(
            home, test_images["probe"], "read", [channel("train", f"file://{data}/{prefix}")],
            resource_config={"instance_type": "local", "keep_alive_period_in_seconds": keep},
        )  # fmt: skip

    first = run_job(job())
    assert first["TrainingJobStatus"] == "Completed"
    assert first["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
    assert first["WarmPoolStatus"]["Status"] == "Available"
    assert first["WarmPoolStatus"]["ResourceRetainedBillableTimeInSeconds"] >= 0
    kept = settings.scratch_root() / first["TrainingJobName"] / "algo-1"
    assert (kept / "input/data/train/a.csv").stat().st_size == 20000  # its staged data stays

    (data / "train/sub/b.csv").unlink()  # gone from the channel since: gone from the instances too
    second = run_job(job())
    assert second["TrainingJobStatus"] == "Completed"
    log = job_log.path(home, second["TrainingJobName"]).read_text()
    assert f"took over the warm pool of {first['TrainingJobName']}" in log
    assert "warm pool: removed 1 staged file(s) the channels no longer hold for their instance" in log
    assert "warm pool: 1 of them (0.0 MB) are on the instances already" in log
    read = json.loads(members(local(second["ModelArtifacts"]["S3ModelArtifacts"]))["read-algo-1.json"])
    assert sorted(read["files"]) == ["train/a.csv"]  # what the container saw: the channel as it is now
    assert "provisioned on the warm pool's instances (algo-1)" in log
    given = store.get(first["TrainingJobName"]).warm_pool
    assert given is not None and (given.status.value, given.reused_by) == ("Reused", second["TrainingJobName"])
    assert second["WarmPoolStatus"]["Status"] == "Available"  # kept again at its end, on the same folders
    assert store.get(second["TrainingJobName"]).warm_pool.folder == first["TrainingJobName"]  # type: ignore[union-attr]
    assert kept.is_dir()

    other = run_job(job(prefix="other"))  # other inputs: not a match, so placed afresh
    assert "took over" not in job_log.path(home, other["TrainingJobName"]).read_text()
    assert store.get(second["TrainingJobName"]).warm_pool.status.value == "Available"  # type: ignore[union-attr]

    ended = subprocess.run(  # UpdateTrainingJob's way to end it, from the command line
        [sys.executable, "-m", "cli.main", "jobs", "keep-alive", second["TrainingJobName"], "0"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert (
        ended.stdout.strip()
        == f"{second['TrainingJobName']}: keep_alive_period_in_seconds 0; WarmPoolStatus Terminated"
    )
    assert not kept.exists()  # its instances left the disk at once
    set_keep_alive(store, settings, other["TrainingJobName"], 1)  # counted from when it was kept: over already
    time.sleep(1.1)
    past = describe(store.get(other["TrainingJobName"]))["WarmPoolStatus"]  # before any sweep has ended it
    assert past["Status"] == "Terminated" and past["ResourceRetainedBillableTimeInSeconds"] <= 1
    terminated = {s.name for s in store.page(JobFilter(warm_pool_status="Terminated"))}
    assert {second["TrainingJobName"], other["TrainingJobName"]} <= terminated
    assert {s.name for s in store.page(JobFilter(warm_pool_status="Reused"))} == {first["TrainingJobName"]}
    sweep(store, settings)
    assert not (settings.scratch_root() / other["TrainingJobName"]).exists()
    assert {p.job_name for p in store.pools(cleaned=False)} == {first["TrainingJobName"]}  # Reused: not its to clean
