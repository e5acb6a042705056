"""What the command line prints: messages, spec problems and job summaries."""

from __future__ import annotations

import sys
from typing import Any

from dockyard.errors import JobSpecError

EXIT_CODES = {"Completed": 0, "Failed": 1, "Stopped": 3}


def say(message: str) -> None:
    print(f"dockyard: {message}", file=sys.stderr, flush=True)


def spec_problems(what: str, exc: JobSpecError) -> int:
    """Print every problem of a spec that cannot run; returns exit code 2."""
    say(f"{what} cannot run:")
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def summary(body: dict[str, Any]) -> str:
    """A DescribeTrainingJob body as a few readable lines."""
    lines = [f"{body['TrainingJobName']}: {body['TrainingJobStatus']} ({body.get('SecondaryStatus')})"]
    if body.get("FailureReason"):
        lines.append(f"  FailureReason: {body['FailureReason']}")
    for t in body.get("SecondaryStatusTransitions", []):
        lines.append(f"  {t['StartTime'][11:19]}  {t['Status']:<26} {t['StatusMessage']}")
    for m in body.get("FinalMetricDataList", []):
        lines.append(f"  metric {m['MetricName']} = {m['Value']:g}")
    lines.append(
        f"  TrainingTimeInSeconds: {body.get('TrainingTimeInSeconds')}  "
        f"BillableTimeInSeconds: {body.get('BillableTimeInSeconds')}"
    )
    if "SpotSavingsPercent" in body:
        lines.append(
            f"  spot: {len(body.get('SpotInterruptions', []))} interruption(s), saved {body['SpotSavingsPercent']}% "
            f"(${body['SpotSavingsUSD']:.4f}) against on-demand"
        )
    for key in ("DebugRuleEvaluationStatuses", "ProfilerRuleEvaluationStatuses"):
        for e in body.get(key, []):
            details = f": {e['StatusDetails']}" if e.get("StatusDetails") else ""
            lines.append(f"  rule {e['RuleConfigurationName']}: {e['RuleEvaluationStatus']}{details}")
    for h in body.get("SystemMetrics", []):
        gpu = f", GPU {h['GpuPercentMean']}% mean" if "GpuPercentMean" in h else ""
        lines.append(
            f"  system {h['Host']}: CPU {h['CpuPercentMean']}% mean, {h['CpuPercentMax']}% peak; "
            f"memory {h['MemoryMiBMax']} MiB peak{gpu} ({h['Samples']} samples)"
        )
    if body.get("ModelArtifacts"):
        lines.append(f"  model:  {body['ModelArtifacts']['S3ModelArtifacts']}")
    if body.get("OutputArtifacts"):
        lines.append(f"  output: {body['OutputArtifacts']}")
    for a in body.get("Analyses", []):
        lines.append(f"  analysis: {a['ProcessingJobName']} ({a['ProcessingJobStatus']}), a Clarify job of its model")
    return "\n".join(lines)


def tuning_summary(body: dict[str, Any]) -> str:
    """A DescribeHyperParameterTuningJob body as a table of trials."""
    lines = [
        f"{body['HyperParameterTuningJobName']}: {body['HyperParameterTuningJobStatus']}  "
        f"{body['TrainingJobStatusCounters']}"
    ]
    if body.get("FailureReason"):
        lines.append(f"  FailureReason: {body['FailureReason']}")
    for s in body["TrainingJobSummaries"]:
        value = s["FinalHyperParameterTuningJobObjectiveMetric"]
        lines.append(
            f"  {s['TrainingJobName']:<40} {s['TrainingJobStatus']:<10} "
            f"{'-' if value is None else f'{value:.6g}':>12}  {s['TunedHyperParameters']}"
        )
    best = body.get("BestTrainingJob")
    if best:
        lines.append(f"  best: {best['TrainingJobName']} = {best['FinalHyperParameterTuningJobObjectiveMetric']:.6g}")
    return "\n".join(lines)
