"""`dockyard worker` on this machine: it registers the host with its engine's
capacity and beats, and the jobs its Prefect worker runs take their capacity
on the host — one waits Pending, saying what is free, while another holds it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockyard.settings import Settings
from dockyard.status import SecondaryStatus
from infra import docker_engine, prefect_api
from infra.fleet import Fleet
from infra.job_store import open_store
from tests.integration.helpers import ROOT, probe_job, unique

pytestmark = pytest.mark.integration
S = SecondaryStatus


def dockyard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_worker_registers_its_host_and_its_jobs_wait_their_turn_for_its_vcpus(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    pool = unique("fleet-pool")  # a pool of its own: no other test's worker takes these runs
    host = unique("host")
    env = {**os.environ, "DOCKYARD_HOME": home, "DOCKYARD_WORK_POOL": pool}
    settings = Settings.from_env(env)
    fleet = Fleet(open_store(settings))
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--name", host, "--label", "rack=a", "--jobs", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not any(h.name == host for h in fleet.hosts()) and time.time() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
        facts = docker_engine.host_facts()
        registered = fleet.host(host)
        assert (registered.vcpus, registered.memory_bytes, registered.gpus) == (facts.cpus, facts.memory_bytes, 0)
        assert registered.labels == {"rack": "a"} and registered.disk_free_bytes > 0
        listed = json.loads(dockyard("hosts", "--json", env=env).stdout)["Hosts"]
        assert [(h["Name"], h["State"], h["FreeVCpus"]) for h in listed] == [(host, "live", facts.cpus)]

        # Each job asks more vCPUs than the host has: it is capped at the host, so it takes all of it.
        jobs = [
            probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "4"})
            | {"resource_config": {"instance_type": "ml.m5.4xlarge", "instance_count": 1}}
            for _ in range(2)
        ]
        deadline = time.time() + 60
        while time.time() < deadline:  # the worker creates the deployments once it has registered
            try:
                for job in jobs:
                    prefect_api.submit("train", pool, {"job": job}, job["training_job_name"], [])
                break
            except Exception:  # noqa: BLE001 - not created yet
                time.sleep(1)
        store = open_store(settings)
        names = [job["training_job_name"] for job in jobs]
        deadline = time.time() + 300
        while time.time() < deadline:
            records = [store.find(n) for n in names]
            if all(r is not None and r.status.primary != "InProgress" for r in records):
                break
            time.sleep(1)
        records = [store.get(n) for n in names]
        assert [r.status.primary for r in records] == ["Completed", "Completed"], (tmp_path / "worker.log").read_text()
        waited = [r for r in records if S.PENDING in [t.status for t in r.status.transitions]]
        assert len(waited) == 1, "one job should have waited for the other's vCPUs"
        pending = next(t for t in waited[0].status.transitions if t.status is S.PENDING)
        assert pending.status_message.startswith("Waiting for 1 x ml.m5.4xlarge: 0 GPUs, 0 vCPUs and ")
        assert pending.status_message.endswith(f"free in host {host}")
        # The grants, in order: one job's, given back, then the other's; none left.
        events = [(event, g.job_name, g.host, g.vcpus) for _, event, g in fleet.history()]
        second = waited[0].name
        first = next(n for n in names if n != second)
        assert events == [
            ("grant", first, host, facts.cpus), ("release", first, host, facts.cpus),
            ("grant", second, host, facts.cpus), ("release", second, host, facts.cpus),
        ]  # fmt: skip
        drained = dockyard("hosts", "drain", host, env=env)
        assert f"host {host} is draining" in drained.stderr and fleet.host(host).draining
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=90)
        log.close()
    assert code == 0, (tmp_path / "worker.log").read_text()
