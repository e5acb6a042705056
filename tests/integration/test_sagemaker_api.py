"""`dockyard serve` against the real clients: boto3, the SageMaker Python SDK v2 and the AWS CLI.

One `dockyard serve` (with its Prefect process worker) for the module, on the
session's Prefect server and S3 endpoint. The SDK and the CLI run from
.venv-clients, installed by scripts/setup as users install them.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from api.training import NOT_FOUND
from dockyard import secrets
from dockyard.settings import Settings
from tests.conftest import ROOT, base_image, free_port
from tests.integration.helpers import store_of, unique

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("sagemaker-api")]

KEY, SECRET = "AKIDOCKYARDTEST", "a-secret-for-the-tests"
# A second principal, limited IAM-style: it reads, and it creates and stops only jobs named bob-*.
LIMITED = {
    "name": "bob",
    "access_key_id": "AKIDOCKYARDBOB",
    "secret_access_key": "bobs-own-secret",
    "actions": ["sagemaker:Describe*", "sagemaker:List*", "sagemaker:CreateTrainingJob", "logs:*"],
    "job_name_prefixes": ["bob-"],
}
CLIENTS = ROOT / ".venv-clients" / "bin"
GROUP = "/aws/sagemaker/TrainingJobs"


@dataclass
class Api:
    url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def client(self, service: str = "sagemaker", secret: str = SECRET, key: str = KEY, **config: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}, **config),
        )

    def start(self) -> None:
        log = open(self.home.parent / "serve.log", "ab")  # noqa: SIM115 - the server's whole life
        self.process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "dockyard"), "serve", "--port", self.url.rsplit(":", 1)[1]],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 240
        while time.time() < deadline:
            assert self.process.poll() is None, (self.home.parent / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("dockyard serve did not answer within 240 s")

    def stop(self) -> None:
        """Stop the endpoint; the worker (and its jobs) run on."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)

    def stop_worker(self) -> None:
        stopped = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "dockyard"), "server", "stop"], env=self.env, capture_output=True, text=True
        )
        assert "stopped the Prefect worker" in stopped.stderr, stopped.stderr


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, prefect_server: str, s3_endpoint: str) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("serve") / "home"
    keys = home.parent / "api-keys.yaml"
    keys.write_text(json.dumps({"principals": [LIMITED]}))  # YAML reads JSON
    env = {
        **os.environ,
        "DOCKYARD_HOME": str(home),
        "DOCKYARD_ACCESS_KEY_ID": KEY,
        "DOCKYARD_SECRET_ACCESS_KEY": SECRET,
        "DOCKYARD_KEYS_FILE": str(keys),
        "DOCKYARD_WORK_POOL": unique("api-tests"),
        "DOCKYARD_S3_ENDPOINT_URL": s3_endpoint,
        "DOCKYARD_STOP_GRACE_SECONDS": "5",
        "DOCKYARD_LEASE_SECONDS": "10",
        "DOCKYARD_BASE_IMAGE": base_image(),
        "PREFECT_API_URL": prefect_server,
    }
    server = Api(f"http://127.0.0.1:{free_port()}", home, env, None)  # type: ignore[arg-type]
    server.start()
    yield server
    server.stop()
    server.stop_worker()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = unique("api-bucket")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="train/data.csv", Body=b"1,2,3\n")
    return name


def create_job(api: Api, bucket: str, name: str, client: Any = None, **hyperparameters: str) -> None:
    (client or api.client()).create_training_job(**job_request(bucket, name, **hyperparameters))


def job_request(bucket: str, name: str, **hyperparameters: str) -> dict[str, Any]:
    """CreateTrainingJob's arguments for a probe job reading s3://BUCKET/train."""
    return dict(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "dockyard-test/probe:1",
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
        },
        RoleArn="arn:aws:iam::111111111111:role/dockyard",
        HyperParameters=hyperparameters,
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/train"}},
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        DebugHookConfig={"S3OutputPath": f"s3://{bucket}/debug", "CollectionConfigurations": []},
        Tags=[{"Key": "team", "Value": "vision"}],
    )


def wait_done(api: Api, name: str) -> dict[str, Any]:
    api.client().get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 600}
    )
    return dict(api.client().describe_training_job(TrainingJobName=name))


def wait_training(api: Api, name: str) -> None:
    deadline = time.time() + 300
    while api.client().describe_training_job(TrainingJobName=name)["SecondaryStatus"] != "Training":
        assert time.time() < deadline, "the job did not reach Training"
        time.sleep(1)


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


@pytest.mark.usefixtures("test_images")
def test_boto3_and_the_aws_cli_run_watch_and_tag_a_job(api: Api, bucket: str, s3_endpoint: str) -> None:
    sm, name = api.client(), unique("api-job")
    token = f"hf-{uuid.uuid4().hex}"
    request = job_request(bucket, name, mode="sleep", seconds="2", hf_token=token) | {
        # What the SageMaker SDK sends by default, and a Debugger rule as Rule.sagemaker(...) sends it.
        "ProfilerConfig": {"S3OutputPath": f"s3://{bucket}/output", "DisableProfiler": False},
        "DebugRuleConfigurations": [
            {
                "RuleConfigurationName": "LossNotDecreasing",
                "RuleEvaluatorImage": "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest",
                "RuleParameters": {"rule_to_invoke": "LossNotDecreasing", "num_steps": "5"},
            }
        ],
    }
    sm.create_training_job(**request)
    # The same request again (a client retrying a Create whose answer it lost) answers as the first did;
    # another request for the name is refused.
    again = sm.create_training_job(**request)
    assert again["TrainingJobArn"].endswith(f"training-job/{name}")
    assert error_of(create_job, api=api, bucket=bucket, name=name, mode="sleep", seconds="3")[0] == "ResourceInUse"
    first = sm.describe_training_job(TrainingJobName=name)
    assert first["TrainingJobStatus"] == "InProgress"
    assert first["SecondaryStatusTransitions"][-1]["StatusMessage"]  # the SDK indexes it from the first poll

    done = wait_done(api, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    assert done["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/output/{name}/output/model.tar.gz"
    assert done["OutputDataConfig"]["KmsKeyId"] == ""
    assert done["DebugHookConfig"]["S3OutputPath"] == f"s3://{bucket}/debug"  # accepted and echoed
    assert done["ProfilingStatus"] == "Enabled"
    [rule] = done["DebugRuleEvaluationStatuses"]
    assert (rule["RuleConfigurationName"], rule["RuleEvaluationStatus"]) == ("LossNotDecreasing", "NoIssuesFound")
    assert secrets.block_of(done["HyperParameters"]["hf_token"]) is not None  # kept in a Secret block
    assert token not in json.dumps(done, default=str)
    assert isinstance(done["CreationTime"], datetime) and done["TrainingTimeInSeconds"] >= 1
    assert [t["Status"] for t in done["SecondaryStatusTransitions"]][-2:] == ["Uploading", "Completed"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert s3.head_object(Bucket=bucket, Key=f"output/{name}/output/model.tar.gz")["ContentLength"] > 0
    profiled = s3.list_objects_v2(Bucket=bucket, Prefix=f"output/{name}/profiler-output/system/incremental/")
    assert [o["Key"].endswith(".algo-1.json") for o in profiled.get("Contents", [])][:1] == [True]
    report = f"output/{name}/rule-output/ProfilerReport/profiler-output/profiler-report.html"
    assert s3.head_object(Bucket=bucket, Key=report)["ContentLength"] > 0

    logs = api.client("logs")
    streams = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=f"{name}/")
    assert "nextToken" not in streams  # the SDK loops for as long as one comes back
    [stream] = [s["logStreamName"] for s in streams["logStreams"]]
    assert stream.startswith(f"{name}/algo-1-")
    page = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True)
    assert any("step=0" in e["message"] for e in page["events"])
    end = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, nextToken=page["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == page["nextForwardToken"]

    arn = done["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "vision"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "dev"}, {"Key": "team", "Value": "nlp"}])
    assert {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]} == {"stage": "dev", "team": "nlp"}
    sm.delete_tags(ResourceArn=arn, TagKeys=["stage"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "nlp"}]

    code, message = error_of(create_job, api=api, bucket=bucket, name=name)
    assert code == "ResourceInUse" and name in message
    assert error_of(sm.describe_training_job, TrainingJobName="no-such-job") == (
        "ValidationException",
        "Requested resource not found.",
    )
    code, message = error_of(sm.describe_endpoint, EndpointName="x")
    assert code == "UnknownOperationException" and "DescribeEndpoint" in message

    found = sm.search(
        Resource="TrainingJob",
        SearchExpression={
            "Filters": [
                {"Name": "TrainingJobName", "Operator": "Equals", "Value": name},
                {"Name": "Metrics.loss", "Operator": "LessThan", "Value": "10"},
                {"Name": "HyperParameters.mode", "Operator": "Equals", "Value": "sleep"},
            ]
        },
    )["Results"]
    assert [r["TrainingJob"]["TrainingJobName"] for r in found] == [name]
    assert {"Key": "team", "Value": "nlp"} in found[0]["TrainingJob"]["Tags"]
    none = sm.search(
        Resource="TrainingJob",
        SearchExpression={"Filters": [{"Name": "TrainingJobName", "Operator": "Equals", "Value": name},
                                      {"Name": "Metrics.loss", "Operator": "GreaterThan", "Value": "10"}]},
    )  # fmt: skip
    assert none["Results"] == []
    code, message = error_of(
        sm.search, Resource="TrainingJob", SearchExpression={"Filters": [{"Name": "Nope", "Value": "x"}]}
    )
    assert code == "ValidationException" and "'Nope'" in message

    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    cli = [str(CLIENTS / "aws"), "--endpoint-url", api.url, "--output", "json"]
    listed = subprocess.run([*cli, "sagemaker", "list-training-jobs"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert name in [j["TrainingJobName"] for j in json.loads(listed.stdout)["TrainingJobSummaries"]]
    events = subprocess.run(
        [*cli, "logs", "get-log-events", "--log-group-name", GROUP, "--log-stream-name", stream, "--start-from-head"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert events.returncode == 0, events.stderr
    assert any("step=0" in e["message"] for e in json.loads(events.stdout)["events"])


def test_a_request_that_breaks_the_api_shape_or_the_spec_is_refused_naming_the_field(api: Api, bucket: str) -> None:
    unchecked = api.client(parameter_validation=False)  # botocore would refuse it before sending
    code, message = error_of(unchecked.create_training_job, TrainingJobName=unique("bad"), RoleArn="r")
    assert code == "ValidationException" and 'Missing required parameter in input: "OutputDataConfig"' in message
    code, message = error_of(
        api.client().create_training_job,
        TrainingJobName=unique("bad"),
        AlgorithmSpecification={"TrainingImage": "dockyard-test/probe:1", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::111111111111:role/dockyard",
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
        ResourceConfig={"InstanceType": "ml.nope.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    assert code == "ValidationException" and "ResourceConfig.InstanceType" in message


@pytest.mark.usefixtures("test_images")
def test_boto3_keeps_a_warm_pool_that_the_next_matching_job_takes_over_and_ends_it(api: Api, bucket: str) -> None:
    sm, prefix = api.client(), unique("warm")
    first, second = f"{prefix}-1", f"{prefix}-2"
    for name in (first, second):
        request = job_request(bucket, name, mode="read")
        request["ResourceConfig"] = {**request["ResourceConfig"], "KeepAlivePeriodInSeconds": 600}
        sm.create_training_job(**request)
        done = wait_done(api, name)
        assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
        assert done["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
        assert done["WarmPoolStatus"]["Status"] == "Available"
    given = sm.describe_training_job(TrainingJobName=first)["WarmPoolStatus"]
    assert (given["Status"], given["ReusedByJob"]) == ("Reused", second)
    assert given["ResourceRetainedBillableTimeInSeconds"] >= 0
    available = sm.list_training_jobs(NameContains=prefix, WarmPoolStatusEquals="Available")["TrainingJobSummaries"]
    assert [(j["TrainingJobName"], j["WarmPoolStatus"]["Status"]) for j in available] == [(second, "Available")]
    assert error_of(
        sm.update_training_job, TrainingJobName=second, ResourceConfig={"KeepAlivePeriodInSeconds": 3601}
    ) == (
        "ValidationException",
        "ResourceConfig.KeepAlivePeriodInSeconds must be 0 to 3600 (got 3601): the warm pool's period, 0 to end it",
    )
    folder = api.home / "scratch" / first  # the second job ran on the first's instances
    assert (folder / "algo-1/input/data/train/data.csv").is_file()
    sm.update_training_job(TrainingJobName=second, ResourceConfig={"KeepAlivePeriodInSeconds": 0})
    assert sm.describe_training_job(TrainingJobName=second)["WarmPoolStatus"]["Status"] == "Terminated"
    deadline = time.time() + 60
    while folder.exists():  # the endpoint's watch takes the ended pool's instances off the disk
        assert time.time() < deadline, "the ended warm pool's folder was not removed"
        time.sleep(1)
    assert error_of(sm.update_training_job, TrainingJobName=first, ResourceConfig={"KeepAlivePeriodInSeconds": 60}) == (
        "ValidationException",
        f"{first} has ended with no warm pool to update (WarmPoolStatus Reused)",
    )


def test_listing_pages_filters_and_sorts_in_the_store(api: Api) -> None:
    from dockyard.loading import build_job
    from tasks.validate import create_record

    settings = Settings.from_env(api.env)
    prefix = unique("page")
    for i in range(25):
        spec = build_job(
            {
                "training_job_name": f"{prefix}-{i:02d}",
                "algorithm_specification": {"training_image": "dockyard-test/probe:1"},
                "resource_config": {"instance_type": "local", "instance_count": 1},
                "output_data_config": {"s3_output_path": "file:///tmp/unused"},
            },
            home=str(settings.home),
            now=datetime.now(UTC),
        )
        create_record(spec, settings, None)
    paginator = api.client().get_paginator("list_training_jobs")
    pages = list(paginator.paginate(NameContains=prefix, SortBy="Name", SortOrder="Ascending", MaxResults=10))
    assert [len(p["TrainingJobSummaries"]) for p in pages] == [10, 10, 5]
    names = [j["TrainingJobName"] for p in pages for j in p["TrainingJobSummaries"]]
    assert names == [f"{prefix}-{i:02d}" for i in range(25)]
    newest = api.client().list_training_jobs(NameContains=prefix, MaxResults=1)["TrainingJobSummaries"]
    assert newest[0]["TrainingJobName"] == f"{prefix}-24"  # CreationTime, newest first, by default
    later = api.client().list_training_jobs(CreationTimeAfter=datetime.now(UTC) + timedelta(hours=1))
    assert later["TrainingJobSummaries"] == []
    assert error_of(api.client().list_training_jobs, NextToken="forged")[0] == "ValidationException"


@pytest.mark.usefixtures("test_images")
def test_stop_training_job_stops_a_running_job_which_keeps_what_it_saved(api: Api, bucket: str) -> None:
    sm, name = api.client(), unique("api-stop")
    create_job(api, bucket, name, mode="sleep", seconds="300")
    wait_training(api, name)
    sm.stop_training_job(TrainingJobName=name)
    done = wait_done(api, name)
    assert (done["TrainingJobStatus"], done["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "ModelArtifacts" in done  # uploaded, as SageMaker does for a stopped job
    code, message = error_of(sm.stop_training_job, TrainingJobName=name)
    assert code == "ValidationException" and "Stopped" in message


def _signed(
    api: Api, body: bytes, key: str, secret: str, at: datetime, target: str = "SageMaker.ListTrainingJobs"
) -> urllib.request.Request:
    request = AWSRequest(
        method="POST",
        url=api.url + "/",
        data=body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
    )
    request.context["timestamp"] = at.strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    signer = SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1")
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}"
    )
    return urllib.request.Request(api.url + "/", data=body, headers=dict(request.headers.items()), method="POST")


def _answer(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_only_requests_signed_now_with_a_known_key_pair_get_in(api: Api) -> None:
    assert error_of(api.client(secret="wrong").list_training_jobs)[0] == "InvalidSignatureException"
    assert error_of(api.client(key="AKIAUNKNOWN").list_training_jobs)[0] == "UnrecognizedClientException"
    now = datetime.now(UTC)
    assert _answer(_signed(api, b"{}", KEY, SECRET, now))[0] == 200  # the hand-made signature is right...
    status, body = _answer(_signed(api, b"{}", KEY, SECRET, now - timedelta(minutes=20)))
    assert (status, body["__type"]) == (400, "InvalidSignatureException")  # ...but not 20 minutes late
    assert "Signature expired" in body["message"]
    tampered = _signed(api, b"{}", KEY, SECRET, now)
    tampered.data = b'{"MaxResults": 5}'
    assert _answer(tampered)[1]["__type"] == "InvalidSignatureException"
    unsigned = urllib.request.Request(
        api.url + "/", data=b"{}", headers={"X-Amz-Target": "SageMaker.ListTrainingJobs"}, method="POST"
    )
    assert _answer(unsigned)[1]["__type"] == "MissingAuthenticationTokenException"
    log = (api.home.parent / "serve.log").read_text() + (api.home / "serve" / "worker.log").read_text()
    assert SECRET not in log


def test_a_principal_limited_to_actions_and_job_name_prefixes_is_refused_the_rest(api: Api, bucket: str) -> None:
    theirs = unique("alice")
    create_job(api, bucket, theirs)  # by the unlimited principal
    bob = api.client(key=LIMITED["access_key_id"], secret=LIMITED["secret_access_key"])
    assert api.client().list_training_jobs(NameContains=theirs)["TrainingJobSummaries"]
    assert bob.list_training_jobs(NameContains=theirs)["TrainingJobSummaries"] == []  # only its own jobs listed
    code, message = error_of(bob.describe_training_job, TrainingJobName=theirs)
    assert code == "AccessDeniedException" and f"job '{theirs}'" in message and "bob-" in message
    code, message = error_of(bob.stop_training_job, TrainingJobName=theirs)
    assert code == "AccessDeniedException" and "sagemaker:StopTrainingJob" in message
    logs = api.client("logs", key=LIMITED["access_key_id"], secret=LIMITED["secret_access_key"])
    assert error_of(logs.describe_log_streams, logGroupName=GROUP)[0] == "AccessDeniedException"
    assert error_of(logs.describe_log_streams, logGroupName=GROUP, logStreamNamePrefix=theirs)[0] == (
        "AccessDeniedException"
    )
    # Its own job goes through: created, described.
    mine = unique("bob")
    create_job(api, bucket, mine, client=bob)
    assert bob.describe_training_job(TrainingJobName=mine)["TrainingJobName"] == mine
    assert wait_done(api, mine)["TrainingJobStatus"] == "Completed"
    assert wait_done(api, theirs)["TrainingJobStatus"] == "Completed"
    assert [j["TrainingJobName"] for j in bob.list_training_jobs(NameContains="bob")["TrainingJobSummaries"]] == [mine]
    code, message = error_of(
        bob.create_training_job,
        **{**job_request(bucket, unique("bob")), "OutputDataConfig": {"S3OutputPath": "file:///tmp"}},
    )
    assert code == "AccessDeniedException" and "locations on this machine" in message
    served = (api.home.parent / "serve.log").read_text()
    assert "access denied: bob may not call sagemaker:DescribeTrainingJob" in served


def test_mutated_create_requests_get_an_error_naming_the_problem_and_create_nothing(api: Api) -> None:
    """Hypothesis sends CreateTrainingJob bodies no SDK would (no client-side validation on the way):
    each gets a 400 with SageMaker's error shape, or is created; a refused one leaves no job behind."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.unit.test_fuzz_spec import SAGEMAKER_REQUEST, mutated

    request = copy.deepcopy(SAGEMAKER_REQUEST)  # its input is nowhere: a body that passes every check is refused there
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://no-such-bucket-here/train"
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(mutated([request]), st.integers(min_value=0, max_value=10**9))
    def one(body: dict[str, Any], n: int) -> None:
        if isinstance(body.get("TrainingJobName"), str):
            body["TrainingJobName"] = f"fuzz-{n}"  # a name of its own each time
        raw = json.dumps(body).encode()  # NaN and Infinity go out as JSON's non-standard tokens
        status, answer = _answer(_signed(api, raw, KEY, SECRET, datetime.now(UTC), "SageMaker.CreateTrainingJob"))
        seen.append(status)
        assert status == 400, (status, answer)  # never 500; never created (its input is nowhere)
        assert answer["__type"] in {"ValidationException", "SerializationException"}, answer
        assert answer["message"].strip() and "Traceback" not in answer["message"], answer
        if status == 400 and isinstance(body.get("TrainingJobName"), str):
            code, _ = error_of(api.client().describe_training_job, TrainingJobName=body["TrainingJobName"])
            assert code == "ValidationException"  # nothing was created

    one()
    assert len(seen) >= 60


def _sdk(api: Api, scenario: str, **args: Any) -> tuple[dict[str, Any], str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_SAGEMAKER": api.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": api.url,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        **({"AWS_ENDPOINT_URL_S3": args["s3_endpoint"]} if "s3_endpoint" in args else {}),  # for what the SDK uploads
    }
    script = Path(__file__).parent / "clients" / "sagemaker_sdk.py"
    run = subprocess.run(
        [str(CLIENTS / "python"), str(script), json.dumps({"scenario": scenario, **args})],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=api.home.parent,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("RESULT ")), run.stdout


def test_the_sagemaker_sdk_runs_a_processing_job_and_boto3_lists_describes_and_refuses_one(
    api: Api, bucket: str, test_images: dict[str, str], s3_endpoint: str
) -> None:
    args = {"image": test_images["probe"], "data": f"s3://{bucket}/train", "output": f"s3://{bucket}/processed"}
    result, printed = _sdk(api, "process", **args)
    assert result["status"] == "Completed"
    assert "processing ['data.csv']" in printed  # the container's line, through the SDK's log tailing
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert s3.get_object(Bucket=bucket, Key="processed/count.txt")["Body"].read() == b"1"
    sm = api.client()
    job = result["job"]
    listed = sm.list_processing_jobs(NameContains=job)["ProcessingJobSummaries"]
    assert [(j["ProcessingJobName"], j["ProcessingJobStatus"]) for j in listed] == [(job, "Completed")]
    assert job not in [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains=job)["TrainingJobSummaries"]]
    assert error_of(sm.describe_training_job, TrainingJobName=job)[0] == "ValidationException"  # another kind
    arn = sm.describe_processing_job(ProcessingJobName=job)["ProcessingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "eval"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "eval"}]
    code, message = error_of(
        sm.create_processing_job,
        ProcessingJobName=unique("bad-proc"),
        RoleArn="arn:aws:iam::111111111111:role/dockyard",
        AppSpecification={"ImageUri": test_images["probe"]},
        ProcessingResources={"ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1}},
        ProcessingInputs=[{"InputName": "d", "S3Input": {"S3Uri": f"s3://{bucket}/train", "LocalPath": "/data",
                                                          "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
    )  # fmt: skip
    assert code == "ValidationException" and "ProcessingInputs[0].S3Input.LocalPath" in message


def test_the_sagemaker_sdks_clarify_processor_runs_dockyards_clarify_as_a_processing_job(
    api: Api, bucket: str, s3_endpoint: str, test_images: dict[str, str]
) -> None:
    from tests.integration.test_clarify import ROWS

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    rows = "".join(",".join(map(str, row)) + "\n" for row in ROWS * 10)  # no header row: the headers are given
    s3.put_object(Bucket=bucket, Key="clarify/data/applicants.csv", Body=rows.encode())
    train = "".join(",".join(map(str, row[:4])) + "\n" for row in ROWS * 5)  # label, then the model's features
    s3.put_object(Bucket=bucket, Key="clarify/train/train.csv", Body=train.encode())
    output = f"s3://{bucket}/clarify/analysis"
    args = {"data": f"s3://{bucket}/clarify/data/applicants.csv", "output": output, "s3_endpoint": s3_endpoint,
            "image": test_images["scorer"], "train": f"s3://{bucket}/clarify/train"}  # fmt: skip
    result, _ = _sdk(api, "clarify", **args)
    assert result["status"] == "Completed"
    body = api.client().describe_processing_job(ProcessingJobName=result["job"])
    assert body["AppSpecification"]["ImageUri"].endswith("/sagemaker-clarify-processing:1.0")  # as it was sent
    analysis = json.loads(s3.get_object(Bucket=bucket, Key="clarify/analysis/analysis.json")["Body"].read())
    [facet] = analysis["pre_training_bias_metrics"]["facets"]["gender"]
    assert {m["name"]: m["value"] for m in facet["metrics"]}["CI"] == 0.4  # (70 - 30) / 100, as by hand
    # ModelConfig(model_name=<a training job>): served from its image, its predictions analysed.
    assert result["post_status"] == "Completed"
    post = json.loads(s3.get_object(Bucket=bucket, Key="clarify/analysis-post/analysis.json")["Body"].read())
    [facet] = post["post_training_bias_metrics"]["facets"]["gender"]
    assert {m["name"] for m in facet["metrics"]} == {"DPPL", "DI"}
    assert all(isinstance(m["value"], float) for m in facet["metrics"]), facet


def test_the_sagemaker_sdk_fits_tails_logs_attaches_and_reports_a_failure(
    api: Api, bucket: str, test_images: dict[str, str]
) -> None:
    args = {"image": test_images["probe"], "train": f"s3://{bucket}/train", "output": f"s3://{bucket}/sdk"}
    result, printed = _sdk(api, "fit", **args)
    job = result["job"]
    assert "step=0 loss=1.00000" in printed  # the container's lines, through the SDK's log tailing
    assert result["model_data"] == f"s3://{bucket}/sdk/{job}/output/model.tar.gz"
    assert result["attached_model_data"] == result["model_data"]
    assert result["attached_instance_type"] == "ml.m5.large"

    failed, _ = _sdk(api, "fail", **args)
    assert "Failed" in failed["error"] and "the probe was told to fail" in failed["error"]


def test_the_sagemaker_sdks_algorithm_estimator_trains_an_algorithm_registered_through_the_api(
    api: Api, bucket: str, test_images: dict[str, str]
) -> None:
    from dockyard.wire import to_pascal
    from tests.integration.test_algorithms import specification

    name = unique("vendor")
    request = to_pascal(specification(test_images["probe"], name))
    args = {"algorithm": request, "train": f"s3://{bucket}/train", "output": f"s3://{bucket}/vendor"}
    result, _ = _sdk(api, "algorithm", **args)
    assert result["described"]["mode"] == "branin" and result["described"]["epochs"] == "3"  # the defaults
    assert name in result["listed"] and name not in result["after_delete"]
    assert "ml.c5.xlarge" in result["sdk_refused"]


def test_the_sagemaker_sdk_tunes_and_boto3_lists_the_trials(api: Api, bucket: str, test_images: dict[str, str]) -> None:
    args = {"image": test_images["probe"], "train": f"s3://{bucket}/train", "output": f"s3://{bucket}/tuning"}
    result, _ = _sdk(api, "tune", **args)
    sm = api.client()
    [tuning] = [
        t["HyperParameterTuningJobName"]
        for t in sm.list_hyper_parameter_tuning_jobs(SortBy="CreationTime", MaxResults=100)[
            "HyperParameterTuningJobSummaries"
        ]
        if result["best"].startswith(t["HyperParameterTuningJobName"])
    ]
    described = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["BestTrainingJob"]["TrainingJobName"] == result["best"]
    assert described["TrainingJobStatusCounters"]["Completed"] == 2
    assert described["ObjectiveStatusCounters"]["Succeeded"] == 2
    assert described["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 2
    trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning, SortBy="FinalObjectiveMetricValue", SortOrder="Ascending"
    )["TrainingJobSummaries"]
    assert len(trials) == 2 and trials[0]["TrainingJobName"] == result["best"]  # loss is minimized
    assert {t["TrainingJobStatus"] for t in trials} == {"Completed"}
    assert trials[0]["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "loss"

    arn = described["HyperParameterTuningJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "project", "Value": "branin"}]  # the tuner's
    trial_tags = sm.list_tags(ResourceArn=sm.describe_training_job(TrainingJobName=result["best"])["TrainingJobArn"])
    assert {"Key": "project", "Value": "branin"} in trial_tags["Tags"]  # passed on to each trial, as SageMaker does
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "dev"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["project"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "dev"}]
    assert error_of(sm.list_tags, ResourceArn=arn.replace(tuning.lower(), "no-such-tuning")) == (
        "ValidationException",
        NOT_FOUND,
    )


@pytest.mark.usefixtures("test_images")
def test_stopping_a_tuning_job_stops_its_running_trial_and_a_second_stop_is_refused(api: Api, bucket: str) -> None:
    sm, name = api.client(), unique("stop-tune")
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "offset", "MinValue": "0", "MaxValue": "1"}]},
        },
        TrainingJobDefinition={
            "AlgorithmSpecification": {
                "TrainingImage": "dockyard-test/probe:1",
                "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
            },
            "RoleArn": "arn:aws:iam::111111111111:role/dockyard",
            "StaticHyperParameters": {"mode": "sleep", "seconds": "600"},
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/train"}},
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/tuning"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 900},
        },
    )

    def trials() -> list[dict[str, Any]]:
        return list(
            sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
                "TrainingJobSummaries"
            ]
        )

    deadline = time.time() + 300
    while not any(
        sm.describe_training_job(TrainingJobName=t["TrainingJobName"])["SecondaryStatus"] == "Training"
        for t in trials()
    ):
        assert time.time() < deadline, "no trial reached Training"
        time.sleep(1)
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    deadline = time.time() + 300
    while (status := sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name))[
        "HyperParameterTuningJobStatus"
    ] != "Stopped":
        assert time.time() < deadline, f"the tuning job is still {status['HyperParameterTuningJobStatus']}"
        time.sleep(1)
    [trial] = trials()  # one at a time, and no new one after the stop
    assert trial["TrainingJobStatus"] == "Stopped", trial
    code, message = error_of(sm.stop_hyper_parameter_tuning_job, HyperParameterTuningJobName=name)
    assert code == "ValidationException" and "there is nothing to stop" in message


@pytest.mark.usefixtures("test_images")
def test_restarting_the_endpoint_leaves_a_running_job_to_finish(api: Api, bucket: str) -> None:
    name = unique("api-restart")
    create_job(api, bucket, name, mode="sleep", seconds="25")
    wait_training(api, name)
    api.stop()
    api.start()
    assert api.client().describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in ("InProgress", "Completed")
    done = wait_done(api, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    assert [t["Status"] for t in done["SecondaryStatusTransitions"]].count("Training") == 1  # not restarted


@pytest.mark.usefixtures("test_images")
def test_a_job_whose_orchestrator_is_killed_goes_back_to_the_work_pool_and_finishes(api: Api, bucket: str) -> None:
    from tasks.validate import lease_name

    name = unique("api-orphan")
    create_job(api, bucket, name, mode="sleep", seconds="30")
    wait_training(api, name)
    held = store_of(str(api.home)).lease(lease_name(name))
    assert held is not None
    os.kill(held.owner.pid, signal.SIGKILL)  # the flow run's process, as a lost machine or OOM kill would end it
    done = wait_done(api, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    assert [t["Status"] for t in done["SecondaryStatusTransitions"]].count("Training") == 1  # reattached, not rerun
    assert "handed back to work pool" in (api.home / "jobs" / name / "job.log").read_text()
