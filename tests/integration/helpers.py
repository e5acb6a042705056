"""Building job specs and running them through the real training flow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from dockyard.record import JobRecord
from dockyard.settings import Settings
from infra.job_store import JobStore, open_store

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def channel(name: str, uri: str, distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "channel_name": name,
        "data_source": {"s3_data_source": {"s3_uri": uri, "s3_data_distribution_type": distribution}},
    }


def probe_job(
    home: str,
    image: str,
    mode: str,
    channels: list[dict[str, Any]] | None = None,
    output: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    hps = {"mode": mode, **extra.pop("hyperparameters", {})}
    return {
        "training_job_name": unique(f"probe-{mode}"),
        "algorithm_specification": {
            "training_image": image,
            "metric_definitions": [{"name": "loss", "regex": r"loss=([0-9.]+)"}],
        },
        "resource_config": {"instance_type": "local", "instance_count": extra.pop("instance_count", 1)},
        "input_data_config": channels or [],
        "hyperparameters": hps,
        "output_data_config": {"s3_output_path": output or f"file://{home}/output"},
        **extra,
    }


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the training flow in-process against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.train import train

    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        return dict(train(spec))


def start_cli(job: dict[str, Any], folder: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m flows.train job.yaml --json` in the background."""
    path = folder / f"{job['training_job_name']}.yaml"
    path.write_text(yaml.safe_dump(job))
    return start_module("flows.train", path, env)


def start_module(module: str, path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m MODULE PATH --json` in the background, Ctrl-C (SIGINT) reaching it as at a
    terminal even when the tests themselves were started in the background, which ignores it."""
    return subprocess.Popen(
        [sys.executable, "-m", module, str(path), "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or os.environ.copy(),
        preexec_fn=_sigint_as_at_a_terminal,
    )


def _sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(module: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE PATH --json` to the end, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )


def store_of(home: str) -> JobStore:
    """The job store the jobs of `home` are in (DOCKYARD_DATABASE_URL when set, as for dockyard)."""
    return open_store(Settings.from_env({**os.environ, "DOCKYARD_HOME": home}))


def record_of(home: str, name: str) -> JobRecord:
    return store_of(home).get(name)


def wait_for_status(home: str, name: str, secondary: str, timeout: float = 120) -> JobRecord:
    """Wait until the job's record shows `secondary`; returns the record."""
    store = store_of(home)
    deadline = time.time() + timeout
    while time.time() < deadline:
        record = store.find(name)
        if record is not None and record.status.secondary == secondary:
            return record
        time.sleep(0.2)
    raise AssertionError(f"{name} did not reach {secondary} in {timeout} s")


def run_example(folder: str, home: str) -> dict[str, Any]:
    """Make an example's data and run its job.yaml through the command line."""
    env = {**os.environ, "DOCKYARD_HOME": home, "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}
    subprocess.run([sys.executable, str(ROOT / folder / "make_data.py")], check=True, env=env)
    result = subprocess.run(
        [sys.executable, "-m", "flows.train", f"{folder}/job.yaml", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout))


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri[7:])


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def new_bucket(endpoint: str) -> str:
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def screenshot(page: Path, png: Path) -> None:
    """The page as headless Chromium draws it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "scripts/setup installs Debian's chromium"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={png}",
         "--window-size=1000,2400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
