"""`dockyard worker` on this machine: it registers the host with its engine's
capacity and beats, and the jobs its Prefect worker runs take their capacity
on the host — one waits Pending, saying what is free, while another holds it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
from botocore.config import Config

from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.status import SecondaryStatus, is_final
from infra import catalog, docker_engine, prefect_api, volumes
from infra.fleet import Fleet
from infra.job_store import Lease, open_store
from tasks.validate import lease_name, read_job_file
from tests.conftest import free_port
from tests.integration.helpers import ROOT, channel, probe_job, unique
from tests.integration.second_engine import second_engine
from tests.integration.test_fleet import no_double_booking

pytestmark = pytest.mark.integration
S = SecondaryStatus
API_KEY, API_SECRET = "AKIDOCKYARDFLEET", "a-secret-for-the-fleet-tests"
HOSTS = ("host-a", "host-b")


def dockyard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def start_worker(name: str, env: dict[str, str], log: Path, *options: str) -> subprocess.Popen[bytes]:
    """`dockyard worker --name NAME [OPTIONS]` in the background, its output in `log`; returns once it registered."""
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--name", name, "--label", "rack=a", "--jobs", "3", *options],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    fleet = Fleet(open_store(Settings.from_env(env)))
    deadline = time.time() + 120
    while not any(h.name == name for h in fleet.hosts()):
        assert worker.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.5)
    return worker


def stop_worker(worker: subprocess.Popen[bytes], log: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=90) == 0, log.read_text()


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def gone(pid: int) -> None:
    """Wait until process `pid` is gone (or a zombie)."""
    deadline = time.time() + 30
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        assert time.time() < deadline, f"process {pid} is still there"
        time.sleep(0.2)


def wait_until(done: Callable[[], bool], log: Path, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not done():
        assert time.time() < deadline, log.read_text()[-5000:]
        time.sleep(0.5)


def given_back(fleet: Fleet) -> None:
    """Wait until every grant is given back (a job's teardown follows its final status)."""
    deadline = time.time() + 60
    while fleet.grants():
        assert time.time() < deadline, f"grants never given back: {fleet.grants()}"
        time.sleep(0.5)


def submit(flow_name: str, pool: str, doc: dict[str, Any], name: str) -> None:
    """Submit a run of the deployment a worker creates once it has registered."""
    deadline = time.time() + 60
    while True:
        try:
            prefect_api.submit(flow_name, pool, {"job": doc}, name, [])
            return
        except Exception:  # noqa: BLE001 - not created yet
            assert time.time() < deadline, "the worker did not create the deployments"
            time.sleep(1)


def test_a_worker_registers_its_host_and_its_jobs_wait_their_turn_for_its_vcpus(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    pool = unique("fleet-pool")  # a pool of its own: no other test's worker takes these runs
    host = unique("host")
    env = {**os.environ, "DOCKYARD_HOME": home, "DOCKYARD_WORK_POOL": pool}
    settings = Settings.from_env(env)
    fleet = Fleet(open_store(settings))
    log = tmp_path / "worker.log"
    worker = start_worker(host, env, log)
    try:
        facts = docker_engine.host_facts()
        registered = fleet.host(host)
        assert (registered.vcpus, registered.memory_bytes, registered.gpus) == (facts.cpus, facts.memory_bytes, 0)
        assert registered.labels == {"rack": "a"} and registered.disk_free_bytes > 0
        listed = json.loads(dockyard("hosts", "--json", env=env).stdout)["Hosts"]
        assert [(h["Name"], h["State"], h["FreeVCpus"]) for h in listed] == [(host, "live", facts.cpus)]

        # Each job asks more vCPUs than the host has: it is capped at the host, so it takes all of it.
        # The first holds the host until the second is seen waiting, then is stopped: no race with
        # how long the second takes to reach the fleet.
        first, second = (
            probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": seconds})
            | {"resource_config": {"instance_type": "ml.m5.4xlarge", "instance_count": 1}}
            for seconds in ("600", "1")
        )
        store = open_store(settings)
        names = [first["training_job_name"], second["training_job_name"]]
        submit("train", pool, first, names[0])
        wait_until(lambda: (r := store.find(names[0])) is not None and r.status.secondary is S.TRAINING, log)
        submit("train", pool, second, names[1])  # while the first holds the whole host
        wait_until(lambda: (r := store.find(names[1])) is not None and r.status.secondary is S.PENDING, log)
        pending = store.get(names[1]).status.transitions[-1]
        assert pending.status_message == "Waiting for 1 x ml.m5.4xlarge: 0 GPUs, 0 vCPUs and 0 GiB free in the fleet"
        # A spot job waits as well, within its MaxWaitTimeInSeconds: waiting for room counts against it.
        spot = second | {
            "training_job_name": f"{names[1]}-spot",
            "enable_managed_spot_training": True,
            "stopping_condition": {"max_runtime_in_seconds": 5, "max_wait_time_in_seconds": 8},
        }
        spot_name = spot["training_job_name"]
        submit("train", pool, spot, spot_name)
        wait_until(lambda: (r := store.find(spot_name)) is not None and is_final(r.status.secondary), log)
        ran_out = store.get(spot_name).status
        assert (ran_out.primary, ran_out.secondary) == ("Stopped", S.MAX_WAIT_TIME_EXCEEDED), ran_out
        assert ran_out.transitions[-1].status_message.startswith(
            "no room in the fleet within MaxWaitTimeInSeconds (8 s): waiting for 1 x ml.m5.4xlarge"
        ), ran_out.transitions[-1]
        stopped = dockyard("jobs", "stop", names[0], env=env)
        assert stopped.returncode == 0, stopped.stderr
        wait_until(
            lambda: all((r := store.find(n)) is not None and r.status.primary != "InProgress" for n in names), log
        )
        records = [store.get(n) for n in names]
        assert [r.status.primary for r in records] == ["Stopped", "Completed"], log.read_text()
        assert S.PENDING not in [t.status for t in records[0].status.transitions]
        # The grants, in order: the first job's, given back, then the second's; none left once the
        # second's teardown (just after its final status) is over.
        given_back(fleet)
        events = [(event, g.job_name, g.host, g.vcpus) for _, event, g in fleet.history()]
        assert events == [
            ("grant", names[0], host, facts.cpus), ("release", names[0], host, facts.cpus),
            ("grant", names[1], host, facts.cpus), ("release", names[1], host, facts.cpus),
        ]  # fmt: skip
        drained = dockyard("hosts", "drain", host, env=env)
        assert f"host {host} is draining" in drained.stderr and fleet.host(host).draining
    finally:
        stop_worker(worker, log)


FIRST_ENGINE = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def fleet_environment(pool: str, database: str, tmp_path: Path) -> dict[str, str]:
    """What every worker of a test's fleet shares: a work pool of its own, one job store, one catalog."""
    return {
        **os.environ,
        "DOCKYARD_WORK_POOL": pool,
        "DOCKYARD_DATABASE_URL": database,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


class Sightings:
    """Which jobs' containers each engine ran, from their labels, looked at every 0.2 s."""

    def __init__(self, engines: dict[str, str], prefix: str) -> None:
        self.engines = {host: docker.APIClient(base_url=url) for host, url in engines.items()}
        self.prefix = prefix  # this test's jobs: other tests run theirs on the first engine too
        self.seen: set[tuple[str, str]] = set()
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._look, daemon=True)
        self.thread.start()

    def _look(self) -> None:
        try:
            while not self.stop.wait(0.2):
                for host, engine in self.engines.items():
                    # The list alone, labels included: inspecting each container after it races their removal.
                    for container in engine.containers(all=True, filters={"label": docker_engine.MANAGED_LABEL}):
                        job = container["Labels"][docker_engine.JOB_LABEL]
                        if job.startswith(self.prefix):
                            self.seen.add((host, job))
        except BaseException as failure:  # noqa: BLE001 - reported by end(), not lost with the thread
            self.failure = failure

    def end(self) -> set[tuple[str, str]]:
        self.stop.set()
        self.thread.join()
        if self.failure is not None:
            raise AssertionError("stopped looking at the engines") from self.failure
        return self.seen


@contextlib.contextmanager
def two_hosts(images: list[str], tmp_path: Path, shared: dict[str, str]) -> Iterator[dict[str, str]]:
    """host-a on this machine's engine and host-b on a second one with `images`, a worker on each
    (two homes under tmp_path, two engines: two machines but for their files); yields the engines' URLs."""
    workers = {}
    with second_engine(images) as engine_b:
        engines = {"host-a": FIRST_ENGINE, "host-b": engine_b.url}
        options = {"host-a": (), "host-b": ("--address", engine_b.address)}  # its own address, in its namespace
        try:
            for host, engine in engines.items():
                env = {**shared, "DOCKYARD_HOME": str(tmp_path / host), "DOCKER_HOST": engine}
                workers[host] = start_worker(host, env, tmp_path / f"{host}.log", *options[host])
            yield engines
        finally:
            for host, worker in workers.items():
                stop_worker(worker, tmp_path / f"{host}.log")


@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_a_tuning_jobs_trials_spread_over_two_hosts_each_holding_one_at_a_time(
    test_images: dict[str, str], tmp_path: Path, postgres_database: str
) -> None:
    pool = unique("fleet-pool")
    shared = fleet_environment(pool, postgres_database, tmp_path)
    with two_hosts([test_images["probe"]], tmp_path, shared) as engines:
        tuning = f"fleet-{os.urandom(3).hex()}"
        sightings = Sightings(engines, tuning)
        doc = {
            "hyper_parameter_tuning_job_name": tuning,
            "hyper_parameter_tuning_job_config": {
                "strategy": "Grid",
                "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
                "resource_limits": {"max_number_of_training_jobs": 4, "max_parallel_training_jobs": 2},
                "parameter_ranges": {
                    "categorical_parameter_ranges": [{"name": "offset", "values": ["0", "1", "2", "3"]}]
                },
            },
            "training_job_definition": {
                "algorithm_specification": {
                    "training_image": test_images["probe"],
                    "metric_definitions": [{"name": "loss", "regex": r"loss=([0-9.]+)"}],
                },
                # Each trial takes a whole host (its type is larger than the host, so capped at it).
                "resource_config": {"instance_type": "ml.m5.4xlarge", "instance_count": 1},
                "static_hyper_parameters": {"mode": "sleep", "seconds": "3"},
                "output_data_config": {"s3_output_path": f"file://{tmp_path}/output"},
            },
        }
        submit("tune", pool, doc, tuning)
        store = open_store(Settings.from_env({**shared, "DOCKYARD_HOME": str(tmp_path / "host-a")}))
        deadline = time.time() + 600
        while (record := store.tuning(tuning)) is None or record.status.value == "InProgress":
            assert time.time() < deadline, {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in engines}
            time.sleep(2)
        given_back(Fleet(store))  # by the trials' teardowns, which follow their final statuses
        seen = sightings.end()
    described = record.describe()
    assert described["HyperParameterTuningJobStatus"] == "Completed", described
    assert described["TrainingJobStatusCounters"]["Completed"] == 4, described
    fleet = Fleet(store)
    granted = {(g.host, g.job_name) for _, event, g in fleet.history() if event == "grant"}
    assert len(granted) == 4 and {host for host, _ in granted} == {"host-a", "host-b"}, granted
    assert seen == granted  # each trial's container ran on the engine of the host it was granted
    assert no_double_booking(fleet) == 2  # one trial per host at a time, both hosts busy at once


@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_a_two_instance_job_runs_an_instance_on_each_host_whose_containers_reach_each_other(
    test_images: dict[str, str], tmp_path: Path, postgres_database: str
) -> None:
    pool = unique("fleet-pool")
    shared = fleet_environment(pool, postgres_database, tmp_path)
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(4):
        (shards / f"part-{index}.txt").write_text(f"shard {index}\n")
    # Two ml.m5.large (2 vCPUs each) on hosts of 2 vCPUs: one on each, neither capped.
    job = probe_job(
        str(tmp_path), test_images["probe"], "contract", [channel("train", shards.as_uri(), "ShardedByS3Key")]
    ) | {"resource_config": {"instance_type": "ml.m5.large", "instance_count": 2}}
    job["algorithm_specification"]["metric_definitions"] = [
        {"name": "host", "regex": r"contract report written by algo-([0-9]+)"}
    ]
    name = job["training_job_name"]
    # A second one, stopped while both its instances run: every part stops, the room comes back.
    stopped = probe_job(str(tmp_path), test_images["probe"], "sleep", hyperparameters={"seconds": "300"}) | {
        "resource_config": {"instance_type": "ml.m5.large", "instance_count": 2}
    }
    store = open_store(Settings.from_env({**shared, "DOCKYARD_HOME": str(tmp_path / "host-a")}))
    fleet = Fleet(store)

    def ended(job_name: str, engines: dict[str, str]) -> JobRecord:
        deadline = time.time() + 300
        while (record := store.find(job_name)) is None or record.status.primary in ("InProgress", "Stopping"):
            assert time.time() < deadline, {h: (tmp_path / f"{h}.log").read_text()[-3000:] for h in engines}
            time.sleep(1)
        given_back(fleet)
        return record

    with two_hosts([test_images["probe"]], tmp_path, shared) as engines:
        sightings = Sightings(engines, name)
        submit("train", pool, job, name)
        record = ended(name, engines)
        seen = sightings.end()
        submit("train", pool, stopped, stopped["training_job_name"])
        log = tmp_path / "host-a.log"
        wait_until(lambda: len(store.metrics(stopped["training_job_name"], "loss", "algo-1")) > 0, log)
        wait_until(lambda: len(store.metrics(stopped["training_job_name"], "loss", "algo-2")) > 0, log)
        stop = dockyard("jobs", "stop", stopped["training_job_name"], env={**shared, "DOCKYARD_HOME": str(tmp_path)})
        assert stop.returncode == 0, stop.stderr
        stopped_record = ended(stopped["training_job_name"], engines)
    logs = {h: (tmp_path / h / "jobs" / name / "job.log") for h in engines}
    logs_text = {h: p.read_text() if p.exists() else "" for h, p in logs.items()}
    assert record.status.primary == "Completed", (record.failure_reason, logs_text)
    granted = {g.instance: g.host for _, event, g in Fleet(store).history() if event == "grant" and g.job_name == name}
    assert sorted(granted) == ["algo-1", "algo-2"] and set(granted.values()) == {"host-a", "host-b"}, granted
    assert seen == {("host-a", name), ("host-b", name)}  # a container on each engine
    # Both instances' model and output data, merged as on one machine; the parts' archives are gone.
    output = tmp_path / "output" / name / "output"
    with tarfile.open(output / "model.tar.gz") as tar:
        reports = {m.name: json.load(tar.extractfile(m)) for m in tar.getmembers() if m.isfile()}  # type: ignore[arg-type]
    with tarfile.open(output / "output.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["algo-1.txt", "algo-2.txt"]
    assert not list((output / ".parts").rglob("*.tar.gz"))
    addresses = {h.name: h.address for h in Fleet(store).hosts()}
    for me, other in (("algo-1", "algo-2"), ("algo-2", "algo-1")):
        report = reports[f"contract-{me}.json"]
        assert report["hostname"] == me and report["env"]["SM_CURRENT_HOST"] == me
        assert report["peers"] == {other: other}  # each reached the other across the machines and heard its name
        assert report["config"]["resourceconfig.json"]["hosts"] == ["algo-1", "algo-2"]
        # Each host staged its own shard of the channel: two of the four files each.
        assert len(report["staged"]) == 2, report["staged"]
    assert addresses["host-b"].startswith("10.77.")  # the second engine's own, as --address gave it
    staged = [f for me in ("algo-1", "algo-2") for f in reports[f"contract-{me}.json"]["staged"]]
    assert sorted(staged) == [f"train/part-{i}.txt" for i in range(4)]
    # Metrics and log lines from both hosts reach the one job record: any machine reads them.
    assert sorted({m.host for m in store.metrics(name, "host")}) == ["algo-1", "algo-2"]
    assert sorted({line.host for line in store.log_lines(name)}) == ["algo-1", "algo-2"]
    elsewhere = dockyard("jobs", "logs", name, env={**shared, "DOCKYARD_HOME": str(tmp_path)})  # orchestrated none
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "[algo-1] " in elsewhere.stdout and "[algo-2] " in elsewhere.stdout, elsewhere.stdout[-3000:]
    assert stopped_record.status.primary == "Stopped", stopped_record.failure_reason
    (part,) = fleet.parts(stopped["training_job_name"])
    assert part.stop_grace is not None and [e.exit_code for e in part.exits or ()] == [143]  # SIGTERM, saved
    with tarfile.open(tmp_path / "output" / stopped["training_job_name"] / "output" / "model.tar.gz") as tar:
        assert {"started.txt", "stopped.txt"} <= set(tar.getnames()), tar.getnames()
    orchestrated = "".join(p.read_text() for p in tmp_path.glob(f"host-*/jobs/{stopped['training_job_name']}/job.log"))
    assert "2 file(s) exist on several hosts; kept the lowest host's" in orchestrated  # both hosts' models merged
    history = [(e, g.instance) for _, e, g in fleet.history() if g.job_name == stopped["training_job_name"]]
    assert sorted(history) == [("grant", "algo-1"), ("grant", "algo-2"), ("release", "algo-1"), ("release", "algo-2")]


@contextlib.contextmanager
def api_replica(home: Path, env: dict[str, str]) -> Iterator[Any]:
    """`dockyard serve --no-worker` on a port of its own (the fleet's workers run the jobs); yields a
    SageMaker client of it."""
    url = f"http://127.0.0.1:{free_port()}"
    log = home.parent / f"{home.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--no-worker", "--port", url.rsplit(":", 1)[1]],
            cwd=ROOT, env={**env, "DOCKYARD_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.time() + 240
        while True:
            assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield boto3.client(
            "sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id=API_KEY,
            aws_secret_access_key=API_SECRET, config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)


@pytest.mark.load  # 40 flow runs' processes: 6 minutes and more on 2 cores
@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_two_api_replicas_and_two_workers_place_forty_jobs_at_once_and_never_double_book(
    test_images: dict[str, str], tmp_path: Path, postgres_database: str, s3_endpoint: str
) -> None:
    pool = unique("fleet-pool")
    shared = fleet_environment(pool, postgres_database, tmp_path) | {
        "DOCKYARD_ACCESS_KEY_ID": API_KEY, "DOCKYARD_SECRET_ACCESS_KEY": API_SECRET,
        "DOCKYARD_S3_ENDPOINT_URL": s3_endpoint,
    }  # fmt: skip
    bucket = unique("fleet-bucket")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    prefix = f"many-{os.urandom(3).hex()}"
    names = [f"{prefix}-{i:02d}" for i in range(40)]

    def request(name: str) -> dict[str, Any]:  # each takes a whole host: ml.m5.large has 2 vCPUs, as these hosts
        return dict(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": test_images["probe"], "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::111111111111:role/dockyard",
            HyperParameters={"mode": "noop"},
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 600},
        )

    store = open_store(Settings.from_env({**shared, "DOCKYARD_HOME": str(tmp_path / "host-a")}))
    # The fleet's catalog made once, as its setup would: 40 processes migrating a new SQLite catalog at
    # once break MLflow's migration (a fleet's catalog is PostgreSQL; see the README).
    catalog.client(shared["MLFLOW_TRACKING_URI"])
    with (
        two_hosts([test_images["probe"]], tmp_path, shared),
        api_replica(tmp_path / "api-1", shared) as one,
        api_replica(tmp_path / "api-2", shared) as two,
    ):
        with ThreadPoolExecutor(8) as submitting:  # at once, half through each replica
            list(submitting.map(lambda i: (one, two)[i % 2].create_training_job(**request(names[i])), range(40)))
        deadline = time.time() + 900
        while any((r := store.find(n)) is None or r.status.primary == "InProgress" for n in names):
            assert time.time() < deadline, {h: (tmp_path / f"{h}.log").read_text()[-2000:] for h in HOSTS}
            time.sleep(2)
        fleet = Fleet(store)
        given_back(fleet)
    assert {store.get(n).status.primary for n in names} == {"Completed"}
    grants = [g for _, event, g in fleet.history() if event == "grant" and g.job_name.startswith(prefix)]
    assert sorted(g.job_name for g in grants) == names  # each placed once
    assert {g.host for g in grants} == {"host-a", "host-b"}
    assert no_double_booking(fleet) <= 2  # one whole-host job per host at a time, from the store's history


@pytest.mark.scale  # loading the PyTorch image into the second engine takes about 100 s
@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_the_pytorch_ddp_example_trains_with_an_instance_on_each_host_over_gloo(
    tmp_path: Path, postgres_database: str
) -> None:
    """The script-mode example's own job.yaml (examples/pytorch-ddp), through two workers."""
    pool = unique("fleet-pool")
    shared = fleet_environment(pool, postgres_database, tmp_path)
    example = ROOT / "examples" / "pytorch-ddp"
    subprocess.run([sys.executable, str(example / "make_data.py"), "--out", str(tmp_path / "data")], check=True)
    job = read_job_file(str(example / "job.yaml"))  # its source_dir made absolute
    del job["base_job_name"]
    name = job["training_job_name"] = unique("ddp-fleet")
    job["input_data_config"][0]["data_source"]["s3_data_source"]["s3_uri"] = (tmp_path / "data" / "train").as_uri()
    job["output_data_config"]["s3_output_path"] = (tmp_path / "output").as_uri()
    with two_hosts([job["algorithm_specification"]["training_image"]], tmp_path, shared) as engines:
        sightings = Sightings(engines, name)
        submit("train", pool, job, name)
        store = open_store(Settings.from_env({**shared, "DOCKYARD_HOME": str(tmp_path / "host-a")}))
        deadline = time.time() + 900
        while (record := store.find(name)) is None or record.status.primary == "InProgress":
            assert time.time() < deadline, {h: (tmp_path / f"{h}.log").read_text()[-3000:] for h in engines}
            time.sleep(2)
        given_back(Fleet(store))
        seen = sightings.end()
    logs = "\n".join(p.read_text() for p in tmp_path.glob(f"host-*/jobs/{name}/job.log"))
    assert record.status.primary == "Completed", (record.failure_reason, logs[-5000:])
    assert seen == {("host-a", name), ("host-b", name)}  # a container on each engine
    assert "algo-1: rank 0 of 2" in logs and "algo-2: rank 1 of 2" in logs, logs[-5000:]
    assert logs.count("script mode: 1 file(s) of code") == 2  # staged on each host
    accuracy = [m.value for m in store.metrics(name, "train:accuracy")]
    assert accuracy and accuracy[-1] >= 0.9, accuracy  # the two ranks' all-reduced gradients trained one model


def survive(
    test_images: dict[str, str],
    tmp_path: Path,
    postgres_database: str,
    disaster: Callable[[dict[str, subprocess.Popen[bytes]], Any, Lease], None],
    **job_fields: Any,
) -> tuple[JobRecord, Fleet, str]:
    """A checkpointing job starts on host-a (a second engine) with host-b (this machine's) beside it;
    once it has checkpointed 10 steps, `disaster(workers, engine_a, the job's lease)` strikes host-a.
    Returns the job's final record, the fleet and the log of the host that finished it."""
    pool = unique("fleet-pool")
    # A dead orchestrator's job is free, and looked for, after 10 s; a lost engine is given up on after 5 s.
    shared = fleet_environment(pool, postgres_database, tmp_path) | {
        "DOCKYARD_LEASE_SECONDS": "10", "DOCKYARD_LOST_CONTACT_SECONDS": "5",
    }  # fmt: skip
    store = open_store(Settings.from_env({**shared, "DOCKYARD_HOME": str(tmp_path / "host-b")}))
    fleet = Fleet(store)
    checkpoints = tmp_path / "checkpoints"
    job = probe_job(
        str(tmp_path), test_images["probe"], "count", hyperparameters={"steps": "60", "step_seconds": "0.3"}
    ) | {"checkpoint_config": {"s3_uri": checkpoints.as_uri()}, **job_fields}
    name = job["training_job_name"]
    workers: dict[str, subprocess.Popen[bytes]] = {}
    with second_engine([test_images["probe"]]) as engine_a:
        try:
            for host, engine in {"host-a": engine_a.url, "host-b": FIRST_ENGINE}.items():
                env = {**shared, "DOCKYARD_HOME": str(tmp_path / host), "DOCKER_HOST": engine}
                workers[host] = start_worker(host, env, tmp_path / f"{host}.log")
            fleet.drain("host-b")  # so the job starts on host-a
            submit("train", pool, job, name)
            deadline = time.time() + 120
            while (
                not (checkpoints / "progress.json").exists()
                or json.loads((checkpoints / "progress.json").read_text())["next"] < 10
            ):  # synced to its checkpoint URI
                assert time.time() < deadline, (tmp_path / "host-a.log").read_text()[-3000:]
                time.sleep(0.3)
            fleet.drain("host-b", draining=False)
            held = store.lease(lease_name(name))
            assert held is not None and [g.host for g in fleet.grants(name)] == ["host-a"]
            disaster(workers, engine_a, held)
            deadline = time.time() + 300
            while (record := store.get(name)).status.primary == "InProgress":
                assert time.time() < deadline, (tmp_path / "host-b.log").read_text()[-3000:]
                time.sleep(1)
            given_back(fleet)  # by the job's teardown, which follows its final status
        finally:
            for host, worker in workers.items():
                stop_worker(worker, tmp_path / f"{host}.log")
            for scratch in (tmp_path / "host-a" / "scratch").glob("*"):  # the dead machine's disks
                volumes.unmount_all(str(scratch))
    assert record.status.primary == "Completed", record.failure_reason
    assert (tmp_path / "output" / name / "output" / "model.tar.gz").exists()
    grants = [(event, g.host) for _, event, g in fleet.history() if g.job_name == name]
    assert grants == [("grant", "host-a"), ("release", "host-a"), ("grant", "host-b"), ("release", "host-b")]
    log = (tmp_path / "host-b" / "jobs" / name / "job.log").read_text()
    resumed = int(log.split("resuming at step ")[1].split()[0])
    assert resumed >= 10, log  # from its checkpoints, not from the start
    return record, fleet, log


@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_a_job_whose_machine_dies_resumes_from_its_checkpoints_on_the_other_host(
    test_images: dict[str, str], tmp_path: Path, postgres_database: str
) -> None:
    def die(workers: dict[str, subprocess.Popen[bytes]], engine_a: Any, held: Lease) -> None:
        """host-a dies: its worker, the job's orchestrator and its engine, at once and without a word."""
        prefect_workers = children(workers["host-a"].pid)
        os.killpg(workers["host-a"].pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(held.owner.pid, signal.SIGKILL)
        workers.pop("host-a").wait(timeout=30)
        for pid in prefect_workers:  # the Prefect workers end with the command that started them
            gone(pid)
        engine_a.stop()

    record, _, log = survive(test_images, tmp_path, postgres_database, die)
    assert "its orchestrator died: handed back to work pool" in log
    assert len(record.attempts) == 2 and record.attempts[0].ended_by == "orchestrator restarted"


@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_a_job_whose_engine_stops_under_a_living_orchestrator_restarts_on_the_other_host(
    test_images: dict[str, str], tmp_path: Path, postgres_database: str
) -> None:
    def engine_stops(workers: dict[str, subprocess.Popen[bytes]], engine_a: Any, held: Lease) -> None:  # noqa: ARG001
        engine_a.stop()  # the worker and the job's orchestrator live on, and lose their engine

    record, _, _ = survive(
        test_images, tmp_path, postgres_database, engine_stops, retry_strategy={"maximum_retry_attempts": 2}
    )
    first = (tmp_path / "host-a" / "jobs" / record.name / "job.log").read_text()
    assert "lost contact with the Docker engine" in first
    assert "this host's Docker engine does not answer: restarting on another host" in first
    assert "placed on host host-b: handed to its worker" in first
    assert len(record.attempts) == 2 and "lost contact with the Docker engine" in record.attempts[0].ended_by
