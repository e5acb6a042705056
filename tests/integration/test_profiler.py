"""Debugger and Profiler on real containers with known behaviour: a loss that
plateaus trips LossNotDecreasing, whose StopTraining action stops the job; a
probe burning every CPU it has trips CPUBottleneck; a healthy job ends with
every rule NoIssuesFound; the profiler report opens in a real browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.settings import Settings
from infra import catalog, job_log
from infra.job_store import open_store
from infra.prefect_api import RULE_EVENT
from tests.integration.helpers import ROOT, members, probe_job, run_job, screenshot

pytestmark = pytest.mark.integration


def rule(name: str, rule_to_invoke: str, **params: str) -> dict[str, Any]:
    image = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"  # as the SDK sends it
    return {
        "rule_configuration_name": name,
        "rule_evaluator_image": image,
        "rule_parameters": {"rule_to_invoke": rule_to_invoke, **params},
    }


def output(home: str, name: str) -> Path:
    return Path(home) / "output" / name


def test_a_loss_that_stops_falling_trips_loss_not_decreasing_whose_stop_action_ends_the_job_stopped(
    home: str, test_images: dict[str, str]
) -> None:
    job = probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "300", "plateau_after": "5"})
    name = job["training_job_name"]
    stop = f'[{{\\"name\\": \\"stoptraining\\", \\"training_job_prefix\\": \\"{name}\\"}}]'  # the SDK's escaping
    body = run_job(
        job
        | {
            "stopping_condition": {"max_runtime_in_seconds": 600},
            "debug_hook_config": {"s3_output_path": f"file://{home}/debug"},
            "debug_rule_configurations": [rule("loss-stalled", "LossNotDecreasing", num_steps="10", action_json=stop)],
            "profiler_config": {"profiling_interval_in_milliseconds": 200},
        }
    )
    assert body["TrainingJobStatus"] == "Stopped", body.get("FailureReason")
    [status] = body["DebugRuleEvaluationStatuses"]
    assert status["RuleConfigurationName"] == "loss-stalled" and status["RuleEvaluationStatus"] == "IssuesFound"
    assert status["StatusDetails"].startswith("loss on algo-1 went from 0.16667 to 0.16667 over 10 values")
    assert body["ProfilingStatus"] == "Enabled" and "ProfilerRuleEvaluationStatuses" not in body
    # Stopped by the rule, gracefully, long before the probe's 300 s or the 600 s limit; its model kept.
    assert body["TrainingTimeInSeconds"] < 300
    model = members(output(home, name) / "output" / "model.tar.gz")
    assert b"stopped by SIGTERM" in model["stopped.txt"] and "done.txt" not in model
    log = job_log.path(home, name).read_text()
    assert "StopTraining: rule loss-stalled found issues (loss on algo-1 went from" in log
    # The rule's Prefect event, for automations (notify someone), reached the server.
    [event] = wait_for_events(RULE_EVENT, f"dockyard.training-job.{name}")
    assert (
        event["payload"]["rule"] == "LossNotDecreasing"
        and event["payload"]["rule_configuration_name"] == "loss-stalled"
    )
    # System metrics: with the job, and as SageMaker lays out its files, one per instance per minute.
    samples = open_store(Settings.from_env(os.environ)).samples(name)
    assert len(samples) >= 5 and {s.host for s in samples} == {"algo-1"}
    files = sorted((output(home, name) / "profiler-output" / "system" / "incremental").glob("*/*.algo-1.json"))
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert {"CPUUtilization", "I/OWaitPercentage"} <= {r["Dimension"] for r in records}
    assert {r["NodeId"] for r in records} == {"algo-1"}


def wait_for_events(event: str, resource: str) -> list[dict[str, Any]]:
    """The events of that name about that resource, once the Prefect server has stored any (it stores
    them a few seconds after they come)."""
    query = {"filter": {"event": {"name": [event]}, "resource": {"id": [resource]}}, "limit": 10}
    deadline = time.time() + 60
    while True:
        answer = httpx.post(f"{os.environ['PREFECT_API_URL']}/events/filter", json=query, timeout=10)
        answer.raise_for_status()
        if answer.json()["events"] or time.time() > deadline:
            return list(answer.json()["events"])
        time.sleep(1)


def test_a_probe_burning_every_cpu_trips_cpu_bottleneck_a_healthy_job_trips_nothing_and_the_report_shows_both(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    quick = {"patience": "10"}  # SageMaker's 1000 samples are 8 minutes at 500 ms
    rules = [
        rule("cpu", "CPUBottleneck", cpu_threshold="40", **quick),
        rule("io", "IOBottleneck", **quick),
        rule("gpu", "LowGPUUtilization", **quick),
        rule("gpu-memory", "GPUMemoryIncrease", **quick),
        rule("init", "MaxInitializationTime"),
        rule("usage", "OverallSystemUsage"),
        rule("ProfilerReport-1700000000", "ProfilerReport", CPUBottleneck_patience="10",
             CPUBottleneck_cpu_threshold="40"),
    ]  # fmt: skip
    profiled = {"profiler_config": {"profiling_interval_in_milliseconds": 200}, "profiler_rule_configurations": rules}
    loss = {"debug_rule_configurations": [rule("loss", "LossNotDecreasing", num_steps="10")]}
    burning = run_job(probe_job(home, test_images["probe"], "burn", hyperparameters={"seconds": "10"}) | profiled)
    healthy = run_job(
        probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "6"}) | profiled | loss
    )
    assert burning["TrainingJobStatus"] == healthy["TrainingJobStatus"] == "Completed"

    def verdicts(body: dict[str, Any]) -> dict[str, str]:
        every = body["ProfilerRuleEvaluationStatuses"] + body.get("DebugRuleEvaluationStatuses", [])
        return {e["RuleConfigurationName"]: e["RuleEvaluationStatus"] for e in every}

    assert verdicts(burning) == {
        "cpu": "IssuesFound", "io": "NoIssuesFound", "gpu": "NoIssuesFound", "gpu-memory": "NoIssuesFound",
        "init": "NoIssuesFound", "usage": "NoIssuesFound", "ProfilerReport-1700000000": "IssuesFound",
    }  # fmt: skip
    assert set(verdicts(healthy).values()) == {"NoIssuesFound"} and len(verdicts(healthy)) == 8
    cpu = next(e for e in burning["ProfilerRuleEvaluationStatuses"] if e["RuleConfigurationName"] == "cpu")
    assert cpu["StatusDetails"].startswith("CPU above 40% in ")

    # The report, where SageMaker's ProfilerReport rule writes it, drawn by a real browser.
    name = burning["TrainingJobName"]
    page = output(home, name) / "rule-output" / "ProfilerReport-1700000000" / "profiler-output" / "profiler-report.html"
    html = page.read_text()
    assert html.count("<svg") >= 5 and "IssuesFound" in html and "CPUBottleneck" in html
    png = tmp_path / "report.png"
    screenshot(page, png)
    from matplotlib.image import imread

    pixels = imread(png)
    drawn = (pixels[:, :, :3].min(axis=2) < 0.9).mean()  # the share of pixels that are not (nearly) white
    assert drawn > 0.02, f"the report draws almost nothing: {drawn:.3%} of its pixels"

    # MLflow has the system metrics too, as its own system/ metrics are named.
    settings = Settings.from_env(os.environ)
    run = catalog.find_run(catalog.client(settings.catalog_uri()), name)
    assert run is not None and run.data.metrics["system/algo-1/cpu_utilization_percentage"] >= 0

    # `dockyard jobs describe` shows the system metrics; `dockyard jobs profile` writes the report anew.
    described = subprocess.run(
        [sys.executable, "-m", "cli.main", "jobs", "describe", name, "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    [system] = json.loads(described.stdout)["SystemMetrics"]
    assert system["Host"] == "algo-1" and system["CpuPercentMax"] > 40
    again = tmp_path / "again.html"
    subprocess.run(
        [sys.executable, "-m", "cli.main", "jobs", "profile", name, "--output", str(again)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert again.read_text().count("<svg") == html.count("<svg")
