"""The container contract against DESIGN.md's layout, and the stage plans."""

import json
from datetime import UTC, datetime

import pytest

from dockyard import contract
from dockyard.fleet import Grant
from dockyard.loading import build_job
from dockyard.outcome import Ending, HostExit, StopKind, StopReason
from dockyard.rules import HostFacts
from infra.pipe import recordio
from infra.retry import is_transient
from infra.storage import StoredObject, relative_key
from tasks.follow import compile_definitions, scrape
from tasks.monitor import plan_outcome, platform_fault
from tasks.persist import plan_persist
from tasks.provision import HOST_NETWORK, plan_provision
from tasks.pull_image import plan_pull_image, registry_of
from tasks.run import plan_run
from tasks.stage_data import epoch_order, plan_stage_data

NOW = datetime(2026, 11, 28, tzinfo=UTC)
HOST = HostFacts(cpus=2, memory_bytes=8 * 1024**3, gpus=0)


def spec(**changes):  # type: ignore[no-untyped-def]
    d = {
        "training_job_name": "job-1",
        "algorithm_specification": {"training_image": "img:1"},
        "resource_config": {"instance_type": "ml.m5.xlarge", "instance_count": 2},
        "input_data_config": [
            {
                "channel_name": "train",
                "content_type": "text/csv",
                "data_source": {
                    "s3_data_source": {"s3_uri": "s3://b/train/", "s3_data_distribution_type": "ShardedByS3Key"}
                },
            },
            {"channel_name": "validation", "data_source": {"s3_data_source": {"s3_uri": "s3://b/val"}}},
        ],
        "hyperparameters": {"epochs": "3", "lr": "0.1"},
        "output_data_config": {"s3_output_path": "s3://b/out"},
        "environment": {"MY_VAR": "1", "SM_HOSTS": "user cannot override"},
    }
    d.update(changes)
    return build_job(d, home="/h", now=NOW)


def test_paths_match_design() -> None:
    assert contract.INPUT_CONFIG_DIR == "/opt/ml/input/config"
    assert contract.channel_dir("train") == "/opt/ml/input/data/train"
    assert contract.MODEL_DIR == "/opt/ml/model" and contract.OUTPUT_DATA_DIR == "/opt/ml/output/data"
    assert contract.FAILURE_FILE == "/opt/ml/output/failure" and contract.CHECKPOINT_DIR == "/opt/ml/checkpoints"
    # Never one volume over all of /opt/ml: images ship /opt/ml/code.
    assert "/opt/ml" not in [target for target, _ in contract.MOUNTS.values()]
    assert contract.MOUNTS["input"] == ("/opt/ml/input", True)


def test_config_files_per_host() -> None:
    files = contract.config_files(spec(), "algo-2", ["algo-2", "algo-1"])
    assert json.loads(files["hyperparameters.json"]) == {"epochs": "3", "lr": "0.1"}
    rc = json.loads(files["resourceconfig.json"])
    assert rc["current_host"] == "algo-2" and rc["hosts"] == ["algo-1", "algo-2"]
    assert rc["network_interface_name"] == "eth0"
    idc = json.loads(files["inputdataconfig.json"])
    assert idc["train"] == {
        "ContentType": "text/csv",
        "TrainingInputMode": "File",
        "S3DistributionType": "ShardedByS3Key",
        "RecordWrapperType": "None",
    }
    assert "checkpointconfig.json" not in files


def test_sm_environment() -> None:
    env = contract.sm_environment(spec(), "algo-1", ["algo-1", "algo-2"], num_cpus=4, num_gpus=0)
    assert env["SM_CHANNELS"] == '["train", "validation"]'
    assert env["SM_CHANNEL_VALIDATION"] == "/opt/ml/input/data/validation"
    assert env["SM_HP_EPOCHS"] == "3" and json.loads(env["SM_HPS"]) == {"epochs": 3, "lr": 0.1}
    assert env["SM_HOSTS"] == '["algo-1", "algo-2"]' and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_NUM_CPUS"] == "4" and env["SM_NUM_GPUS"] == "0"
    assert env["SM_MODEL_DIR"] == "/opt/ml/model" and env["SM_OUTPUT_DATA_DIR"] == "/opt/ml/output/data"
    assert env["SM_INPUT_CONFIG_DIR"] == "/opt/ml/input/config"
    assert json.loads(env["SM_TRAINING_ENV"])["job_name"] == "job-1"
    assert json.loads(env["SM_USER_ARGS"]) == ["--epochs", "3", "--lr", "0.1"]
    assert env["TRAINING_JOB_NAME"] == "job-1" and env["TRAINING_JOB_ARN"].endswith("training-job/job-1")
    assert env["MY_VAR"] == "1" and env["SM_HOSTS"] != "user cannot override"


def test_provision_caps_at_the_host_and_names_hosts() -> None:
    plan = plan_provision(spec(), HOST, "/scratch")
    assert [h.host for h in plan.hosts] == ["algo-1", "algo-2"]
    assert plan.hosts[0].nano_cpus == 2 * 10**9 and plan.hosts[0].mem_limit == 8 * 1024**3
    assert len(plan.warnings) == 2 and "capping" in plan.warnings[0]
    assert plan.network == "dockyard-job-1" and plan.hosts[1].scratch == "/scratch/job-1/algo-2"
    local = plan_provision(spec(resource_config={"instance_type": "local"}), HOST, "/s")
    assert local.hosts[0].nano_cpus is None and local.hosts[0].mem_limit is None and not local.warnings


def test_gpus_are_split_between_hosts_when_there_are_enough() -> None:
    gpu_host = HostFacts(cpus=16, memory_bytes=64 * 1024**3, gpus=2)
    plan = plan_provision(spec(resource_config={"instance_type": "ml.g5.xlarge", "instance_count": 2}), gpu_host, "/s")
    assert [h.gpu_device_ids for h in plan.hosts] == [["0"], ["1"]]
    assert plan.hosts[0].environment["SM_NUM_GPUS"] == "1"


def test_stage_data_shards_round_robin_and_replicates_the_rest() -> None:
    s = spec()
    train = [StoredObject(f"s3://b/train/{i}.csv", f"{i}.csv", 10) for i in range(5)]
    val = [StoredObject("s3://b/val/v.csv", "v.csv", 3)]
    plan = plan_stage_data(s, {"train": train, "validation": val}, {"algo-1": "/s/1", "algo-2": "/s/2"})
    by_host: dict[str, list[str]] = {}
    for d in plan.downloads:
        by_host.setdefault(d.host, []).append(d.dest)
    assert sorted(by_host["algo-1"]) == sorted(
        [
            "/s/1/input/data/train/0.csv",
            "/s/1/input/data/train/2.csv",
            "/s/1/input/data/train/4.csv",
            "/s/1/input/data/validation/v.csv",
        ]
    )
    assert len(by_host["algo-2"]) == 3
    assert plan.total_bytes == 5 * 10 + 2 * 3


def test_pipe_streams_shuffle_per_epoch_then_shard_and_fastfile_binds_into_every_container() -> None:
    s = spec(
        input_data_config=[
            {
                "channel_name": "train",
                "input_mode": "Pipe",
                "shuffle_config": {"seed": 3},
                "compression_type": "Gzip",
                "data_source": {
                    "s3_data_source": {"s3_uri": "s3://b/train/", "s3_data_distribution_type": "ShardedByS3Key"}
                },
            },
            {
                "channel_name": "fast",
                "input_mode": "FastFile",
                "data_source": {"s3_data_source": {"s3_uri": "s3://b/f"}},
            },
            {
                "channel_name": "shared",
                "data_source": {
                    "file_system_data_source": {
                        "file_system_id": "fs-1",
                        "directory_path": "/mnt/efs",
                        "file_system_access_mode": "rw",
                    }
                },
            },
        ]
    )
    objects = [StoredObject(f"s3://b/train/{i}", str(i), 1) for i in range(6)]
    plan = plan_stage_data(s, {"train": objects}, {"algo-1": "/s/1", "algo-2": "/s/2"}, "/s")
    assert plan.downloads == ()
    one, two = plan.streams
    assert (two.host, two.host_index, two.host_count, two.sharded) == ("algo-2", 1, 2, True)
    assert (one.host, one.folder, one.gzip, one.seed) == ("algo-1", "/s/1/input/data", True, 3)
    items = tuple(o.uri for o in objects)
    for epoch in range(3):
        first = epoch_order(items, epoch, 3, 0, 2, True)
        second = epoch_order(items, epoch, 3, 1, 2, True)
        assert sorted(first + second) == sorted(items) and not set(first) & set(second)
    assert epoch_order(items, 0, 3, 0, 1, False) != epoch_order(items, 1, 3, 0, 1, False)
    assert epoch_order(items, 1, 3, 0, 1, False) == epoch_order(items, 1, 3, 0, 1, False)
    assert epoch_order(items, 0, None, 1, 2, True) == list(items[1::2])  # unshuffled: File mode's round robin
    run = plan_run(s, plan_provision(s, HOST, "/s"), "img:1")[1]
    assert run.volumes["/s/job-1/fastfile/fast"] == {"bind": "/opt/ml/input/data/fast", "mode": "ro"}
    assert run.volumes["/mnt/efs"] == {"bind": "/opt/ml/input/data/shared", "mode": "rw"}
    config = contract.input_data_config(s)
    assert config["train"] == {
        "TrainingInputMode": "Pipe",
        "RecordWrapperType": "None",
        "S3DistributionType": "ShardedByS3Key",
        "CompressionType": "Gzip",
    }
    assert config["shared"] == {"TrainingInputMode": "File", "RecordWrapperType": "None"}


def test_recordio_frames_as_mxnet_does() -> None:
    assert recordio(b"abcde") == bytes.fromhex("0a23d7ce05000000") + b"abcde\0\0\0"
    assert recordio(b"") == bytes.fromhex("0a23d7ce00000000")


def test_object_paths_cannot_escape_the_channel() -> None:
    import pytest

    from dockyard.errors import JobSpecError

    with pytest.raises(JobSpecError, match="would leave the channel folder"):
        plan_stage_data(spec(), {"train": [StoredObject("s3://b/x", "../x", 1)]}, {"algo-1": "/s"})


def test_relative_keys_follow_the_prefix() -> None:
    assert relative_key("train/a/b.csv", "train") == "a/b.csv"
    assert relative_key("train/a.csv", "train/") == "a.csv"
    assert relative_key("data/train.csv", "data/train.csv") == "train.csv"
    assert relative_key("data/train-2.csv", "data/train") == "train-2.csv"


def test_run_plan_mounts_and_command() -> None:
    s = spec()
    plans = plan_run(s, plan_provision(s, HOST, "/s"), "img:1")
    first = plans[0]
    assert first.command == ["train"] and first.entrypoint is None
    assert first.volumes["/s/job-1/algo-1/input"] == {"bind": "/opt/ml/input", "mode": "ro"}
    assert first.volumes["/s/job-1/algo-1/model"] == {"bind": "/opt/ml/model", "mode": "rw"}
    assert first.aliases == ["algo-1"] and first.labels["dockyard.job"] == "job-1"
    custom = spec(
        algorithm_specification={
            "training_image": "i",
            "container_entrypoint": ["python", "x.py"],
            "container_arguments": ["--a"],
        }
    )
    p = plan_run(custom, plan_provision(custom, HOST, "/s"), "i")[0]
    assert (p.entrypoint, p.command) == (["python", "x.py"], ["--a"])


def test_pull_plan() -> None:
    assert registry_of("localhost:5000/a/b:1") == "localhost:5000"
    assert registry_of("ubuntu:22.04") is None and registry_of("team/img") is None
    ecr = spec(algorithm_specification={"training_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x:1"})
    assert plan_pull_image(ecr, None).ecr_region == "eu-west-1"
    builtin = spec(
        algorithm_specification={"algorithm_name": "xgboost"},
        hyperparameters={"num_round": "1"},
        resource_config={"instance_count": 1},
    )
    plan = plan_pull_image(builtin, "base:1", images_dir="/imgs")
    assert (plan.image, plan.build_context, plan.build_args) == (
        "dockyard/xgboost:2.0",
        "/imgs/xgboost",
        {"BASE_IMAGE": "base:1"},
    )


def test_persist_plan() -> None:
    plan = plan_persist(spec(), {"algo-2": "/s/2", "algo-1": "/s/1"})
    assert plan.model_sources == ("/s/1/model", "/s/2/model")
    assert plan.model_uri == "s3://b/out/job-1/output/model.tar.gz"


def test_metric_scraping_with_builtin_defaults() -> None:
    xgb = spec(algorithm_specification={"algorithm_name": "xgboost"})
    definitions = compile_definitions(xgb)
    assert scrape("[12]\ttrain-auc:0.99\tvalidation-auc:0.975", definitions) == [
        ("train:auc", 0.99),
        ("validation:auc", 0.975),
    ]
    assert scrape("[3]#011validation-rmse:1.5e-2", definitions) == [("validation:rmse", 0.015)]
    assert scrape("no metrics here", definitions) == []


def test_a_nan_or_infinite_metric_is_no_value() -> None:
    """A diverged run prints nan or inf; a record could not carry them as JSON."""
    loss = spec(
        algorithm_specification={
            "training_image": "img:1",
            "metric_definitions": [{"name": "loss", "regex": "loss=(\\S+)"}],
        }
    )
    definitions = compile_definitions(loss)
    assert scrape("loss=0.25", definitions) == [("loss", 0.25)]
    assert [scrape(f"loss={v}", definitions) for v in ("nan", "NaN", "inf", "-inf", "x")] == [[]] * 5


def test_outcomes() -> None:
    ok = HostExit(host="algo-1", exit_code=0)
    assert plan_outcome([ok], None).ending is Ending.COMPLETED
    failed = HostExit(host="algo-2", exit_code=1, failure_text="x" * 2000)
    outcome = plan_outcome([ok, failed], None)
    assert outcome.ending is Ending.FAILED and len(outcome.failure_reason or "") == 1024
    oom = plan_outcome([HostExit(host="algo-1", exit_code=137, oom_killed=True)], None)
    assert "out of memory" in (oom.failure_reason or "")
    assert plan_outcome([ok], StopReason(kind=StopKind.MAX_RUNTIME)).ending is Ending.MAX_RUNTIME_EXCEEDED
    stopped = plan_outcome([failed], StopReason(kind=StopKind.REQUESTED, detail="interrupted by Ctrl-C"))
    assert stopped.ending is Ending.STOPPED and stopped.message == "Training job stopped: interrupted by Ctrl-C"
    piped = plan_outcome([ok], StopReason(kind=StopKind.PIPE_FAILED, detail="channel train, epoch 0: gone"))
    assert piped.ending is Ending.FAILED and piped.failure_reason == "ClientError: channel train, epoch 0: gone"
    assert plan_outcome([ok], StopReason(kind=StopKind.INTERRUPTED)).ending is Ending.INTERRUPTED


def test_transient_errors_are_told_apart() -> None:
    from dockyard.errors import InfraError, JobSpecError, TransientInfraError

    class ClientError(Exception):
        def __init__(self, code: str, status: int) -> None:
            self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}

    assert is_transient(TransientInfraError("x")) and is_transient(ConnectionError())
    assert is_transient(ClientError("SlowDown", 503)) and is_transient(ClientError("InternalError", 500))
    assert not is_transient(ClientError("NoSuchKey", 404)) and not is_transient(ClientError("AccessDenied", 403))
    assert not is_transient(JobSpecError("x")) and not is_transient(InfraError("x"))
    wrapped = OSError("read failed")
    wrapped.__cause__ = ClientError("SlowDown", 503)
    assert is_transient(wrapped)
    import httpx  # Prefect's client raises httpx's status errors: a busy server is transient, a bad request not

    def http_error(status: int) -> httpx.HTTPStatusError:
        request = httpx.Request("POST", "http://prefect/api/deployments/x/create_flow_run")
        return httpx.HTTPStatusError("x", request=request, response=httpx.Response(status, request=request))

    assert is_transient(http_error(503)) and is_transient(http_error(429)) and not is_transient(http_error(422))


def test_the_host_layout_mirrors_the_container_paths() -> None:
    layout = contract.host_layout("/s/algo-1/")
    assert layout.on_host(contract.MODEL_DIR) == layout.model == "/s/algo-1/model"
    assert layout.output_data == "/s/algo-1/output/data" and layout.failure_file == "/s/algo-1/output/failure"
    assert layout.channel("train") == "/s/algo-1/input/data/train"
    assert layout.input_config == "/s/algo-1/input/config" and layout.checkpoints == "/s/algo-1/checkpoints"
    assert set(layout.folders()) >= {layout.input_data, layout.output_data, layout.checkpoints}


def test_backoff_patience_counts_from_the_first_error_not_from_a_long_first_wait() -> None:
    import time

    from dockyard.errors import DockyardError, TransientInfraError
    from infra.retry import with_backoff

    calls: list[float] = []

    def call() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.3)  # waited its turn longer than the patience, then met a busy server
            raise TransientInfraError("503")
        if len(calls) == 2:
            raise TransientInfraError("503")
        return "slots"

    assert with_backoff(call, patience=0.2, first_delay=0.01) == "slots" and len(calls) == 3

    def refused() -> str:
        calls.append(time.monotonic())
        raise DockyardError("a spec error: no retry helps")

    calls.clear()
    with pytest.raises(DockyardError):
        with_backoff(refused, patience=5, first_delay=0.01)
    assert len(calls) == 1


def test_a_job_granted_on_two_machines_runs_on_their_networks_each_machine_making_its_own_part() -> None:
    s = spec()
    grants = (
        Grant(job_name="job-1", instance="algo-1", host="gpu-a", vcpus=4, memory_bytes=0),
        Grant(job_name="job-1", instance="algo-2", host="gpu-b", vcpus=4, memory_bytes=0),
    )
    plan = plan_provision(s, HOST, "/s", grants, {"gpu-a": "10.0.0.1", "gpu-b": "10.0.0.2"}, "ens5")
    assert plan.network == HOST_NETWORK and plan.peers == {"algo-1": "10.0.0.1", "algo-2": "10.0.0.2"}
    assert plan.machines() == ["gpu-a", "gpu-b"]
    assert [h.host for h in plan.part("gpu-b").hosts] == ["algo-2"]
    assert json.loads(plan.hosts[1].config_files["resourceconfig.json"])["network_interface_name"] == "ens5"
    assert plan.hosts[1].environment["SM_NETWORK_INTERFACE_NAME"] == "ens5"
    container = plan_run(s, plan.part("gpu-b"), "img:1")[0]
    assert container.network == "host" and container.extra_hosts == plan.peers and container.hostname == "algo-2"
    # Grants on one machine: the job's own network, as without a fleet.
    one = plan_provision(s, HOST, "/s", tuple(g.model_copy(update={"host": "gpu-a"}) for g in grants))
    assert one.network == "dockyard-job-1" and one.peers == {} and one.part("gpu-a") == one
    assert json.loads(one.hosts[0].config_files["resourceconfig.json"])["network_interface_name"] == "eth0"


def test_a_part_stages_its_hosts_shares_of_the_whole_jobs_shards() -> None:
    train = [StoredObject(f"s3://b/train/{i}.csv", f"{i}.csv", 10) for i in range(5)]
    plan = plan_stage_data(spec(), {"train": train, "validation": []}, {"algo-2": "/s/2"})
    assert sorted(d.dest for d in plan.downloads) == ["/s/2/input/data/train/1.csv", "/s/2/input/data/train/3.csv"]


def test_persist_merges_the_other_machines_parts_after_this_ones() -> None:
    plan = plan_persist(spec(), {"algo-1": "/s/1"}, (("/t/b/model", "/t/b/output"),))
    assert plan.model_sources == ("/s/1/model", "/t/b/model")
    assert plan.output_sources == ("/s/1/output/data", "/t/b/output")


def test_an_instance_stopped_because_another_failed_neither_names_the_failure_nor_counts_as_a_fault() -> None:
    stopped_one = HostExit(host="algo-1", exit_code=143)
    failed = HostExit(host="algo-2", exit_code=2, failure_text="bad data")
    outcome = plan_outcome([stopped_one, failed], None, frozenset({"algo-1"}))
    assert outcome.ending is Ending.FAILED and outcome.failure_reason == "AlgorithmError: bad data"
    assert platform_fault([stopped_one, failed], None, False, frozenset({"algo-1"})) is None
    assert platform_fault([stopped_one, failed], None, False) is not None  # a SIGTERM dockyard did not send
