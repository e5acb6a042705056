"""A job's role becomes its containers' credentials, served as ECS and SageMaker serve
them, against a moto server that enforces IAM policies: the container's own AWS SDK
finds them, reads its input and writes its output with them, and is refused what the
role does not allow; the host's credentials never reach it; an isolated job gets none."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import job_log
from tests.conftest import free_port
from tests.integration.helpers import local, members, run_cli, run_job, start_cli, unique, wait_for_status

pytestmark = pytest.mark.integration

IMAGE = "dockyard/pytorch:2.13"  # SageMaker's framework images carry boto3, as this one does
ROLE_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
}
PROBE = """
import json, os, urllib.request
import boto3, botocore
bucket, out = os.environ["BUCKET"], {}
out["aws_environment"] = sorted(k for k in os.environ if k.startswith("AWS_"))
out["aws_files"] = sorted({p for p in ("/root/.aws", os.path.expanduser("~/.aws")) if os.path.exists(p)})
print("token=" + os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", ""), flush=True)
found = boto3.session.Session().get_credentials()
out["method"], out["access_key"] = (found.method, found.access_key) if found else (None, None)
if found:
    s3 = boto3.client("s3")
    out["input"] = s3.get_object(Bucket=bucket, Key="job-a/input/data.txt")["Body"].read().decode()
    s3.put_object(Bucket=bucket, Key=os.environ["WRITE_KEY"], Body=b"written with the role")
    try:
        s3.get_object(Bucket=bucket, Key="other-job/secret.txt")
        out["other"] = "read"
    except botocore.exceptions.ClientError as exc:
        out["other"] = exc.response["Error"]["Code"]
try:
    urllib.request.urlopen(os.environ["ENDPOINT"], timeout=3)
    out["endpoint"] = "reached"
except urllib.error.HTTPError as exc:
    out["endpoint"] = exc.code
except OSError as exc:
    out["endpoint"] = type(exc).__name__
json.dump(out, open("/opt/ml/model/credentials.json", "w"))
"""


WATCH = """
import json, os, time, urllib.request
request = urllib.request.Request(
    os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
    headers={"Authorization": os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]},
)
seen, keys = [], set()
deadline = time.time() + 150
while time.time() < deadline and seen[-3:] != ["served", "down", "served"]:
    try:
        keys.add(json.load(urllib.request.urlopen(request, timeout=2))["AccessKeyId"])
        state = "served"
    except OSError:
        state = "down"
    if not seen or seen[-1] != state:
        seen.append(state)
        print("credentials endpoint:", state, flush=True)
    time.sleep(0.5)
json.dump({"seen": seen, "keys": len(keys)}, open("/opt/ml/model/watch.json", "w"))
"""


def _docker_gateway() -> str:
    """An address of this machine that containers on a job's bridge network reach: the default
    bridge's gateway, else (the engine's answer had none, as once in a full run here) docker0's."""
    gateway = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not gateway:
        shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True).stdout
        gateway = shown.split(" inet ")[1].split("/")[0] if " inet " in shown else ""
    assert gateway, "no address of this machine for the containers: the default bridge has no gateway"
    return gateway


@pytest.fixture
def enforcing_aws() -> Iterator[dict[str, Any]]:
    """A moto server on every address that enforces IAM policies once set up: a bucket with the
    job's input and another job's object, a role allowed only the job's locations, and a host
    user allowed everything (the orchestrator's own credentials)."""
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    setup = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    bucket = f"creds-{uuid.uuid4().hex[:8]}"
    s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="job-a/input/data.txt", Body=b"the job's input")
    s3.put_object(Bucket=bucket, Key="other-job/secret.txt", Body=b"another job's data")
    role = iam.create_role(RoleName="job-role", AssumeRolePolicyDocument=json.dumps(ROLE_TRUST))["Role"]["Arn"]
    allowed = [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/job-a/input/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/output/*"},
    ]
    iam.put_role_policy(
        RoleName="job-role",
        PolicyName="job",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": allowed}),
    )
    iam.create_user(UserName="host")
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="host", PolicyName="all", PolicyDocument=json.dumps(everything))
    key = iam.create_access_key(UserName="host")["AccessKey"]
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=5)  # from here on, every request is checked
    yield {
        "url": url,
        "container_url": f"http://{_docker_gateway()}:{port}",
        "bucket": bucket,
        "role": role,
        "host_key": key["AccessKeyId"],
        "host_secret": key["SecretAccessKey"],
    }
    server.terminate()
    server.wait(timeout=10)


def probe(name: str, aws: dict[str, Any], write_key: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "training_job_name": name,
        "role": aws["role"],
        "algorithm_specification": {"training_image": IMAGE, "container_entrypoint": ["python", "-c", PROBE]},
        "resource_config": {"instance_type": "local", "instance_count": 1},
        "environment": {"BUCKET": aws["bucket"], "WRITE_KEY": write_key, "ENDPOINT": endpoint},
        "output_data_config": {"s3_output_path": f"s3://{aws['bucket']}/output"},
        **extra,
    }


def test_the_role_s_credentials_reach_the_container_and_nothing_more(
    home: str, enforcing_aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import boto3

    aws = enforcing_aws
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws["url"])
    monkeypatch.delenv("DOCKYARD_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws["host_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws["host_secret"])
    monkeypatch.setenv("DOCKYARD_STS_ENDPOINT_URL", aws["url"])
    monkeypatch.setenv("DOCKYARD_CONTAINER_S3_ENDPOINT_URL", aws["container_url"])

    name = unique("creds")
    job = probe(name, aws, f"output/{name}/from-the-container.txt", "http://169.254.170.2/")
    job["input_data_config"] = [
        {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": f"s3://{aws['bucket']}/job-a/input"}}}
    ]
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    host = boto3.client(
        "s3", endpoint_url=aws["url"], aws_access_key_id=aws["host_key"], aws_secret_access_key=aws["host_secret"]
    )
    model = host.get_object(Bucket=aws["bucket"], Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    (tmp_path / "model.tar.gz").write_bytes(model)
    seen = json.loads(members(tmp_path / "model.tar.gz")["credentials.json"])
    assert seen["method"] == "container-role"  # the SDK's own container-credentials provider found them
    assert seen["access_key"] != aws["host_key"] and seen["access_key"].startswith("ASIA")  # minted by STS
    assert "AWS_ACCESS_KEY_ID" not in seen["aws_environment"] and "AWS_SECRET_ACCESS_KEY" not in seen["aws_environment"]
    assert seen["aws_files"] == []  # nor in its files
    assert seen["input"] == "the job's input"
    written = host.get_object(Bucket=aws["bucket"], Key=f"output/{name}/from-the-container.txt")["Body"].read()
    assert written == b"written with the role"
    assert seen["other"] == "AccessDenied"  # the role allows the job's locations only
    log = job_log.path(home, name).read_text()
    assert f"the containers get credentials for {aws['role']} at http://169.254.170.2:" in log
    assert "[algo-1] token=********" in log  # the token is a secret: a line that prints it is masked

    # An isolated job gets no credentials and cannot reach the endpoint at all.
    isolated_name = unique("creds-isolated")
    endpoint_uri = next(line.rsplit(" at ", 1)[1] for line in log.splitlines() if "get credentials for" in line)
    isolated = probe(isolated_name, aws, "unused", endpoint_uri, enable_network_isolation=True)
    isolated["output_data_config"] = {"s3_output_path": f"file://{home}/output"}
    body = run_job(isolated)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    seen = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["credentials.json"])
    assert seen["method"] is None and not [k for k in seen["aws_environment"] if "CONTAINER" in k]
    assert seen["endpoint"] in ("URLError", "TimeoutError", "ConnectionRefusedError"), seen


def test_a_job_picked_up_by_a_new_orchestrator_keeps_getting_credentials(
    home: str, enforcing_aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws = enforcing_aws
    for key, value in {
        "AWS_ACCESS_KEY_ID": aws["host_key"],
        "AWS_SECRET_ACCESS_KEY": aws["host_secret"],
        "DOCKYARD_STS_ENDPOINT_URL": aws["url"],
    }.items():
        monkeypatch.setenv(key, value)
    job = {
        "training_job_name": unique("creds-watch"),
        "role": aws["role"],
        "algorithm_specification": {"training_image": IMAGE, "container_entrypoint": ["python", "-c", WATCH]},
        "resource_config": {"instance_type": "local", "instance_count": 1},
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
    }
    name = job["training_job_name"]
    process = start_cli(job, tmp_path)
    wait_for_status(home, name, "Training")
    log = job_log.path(home, name)
    for _ in range(120):  # the container has its first credentials
        if "credentials endpoint: served" in log.read_text():
            break
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)  # the orchestrator dies, and its endpoint with it
    process.wait(30)
    result = run_cli("flows.train", tmp_path / f"{name}.yaml")  # a rerun picks the job up
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    watched = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["watch.json"])
    assert watched["seen"] == ["served", "down", "served"] and watched["keys"] == 2  # minted again by the new one
    assert "serving the containers' credentials again at http://169.254.170.2:" in log.read_text()
