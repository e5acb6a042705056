"""The job record: what DescribeTrainingJob says about a job.

Kept as one pydantic model; `describe` renders it in SageMaker's shape for
job.json and `dockyard jobs describe`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from dockyard.contract import job_arn
from dockyard.instances import INSTANCE_TYPES
from dockyard.outcome import StopReason
from dockyard.secrets import KINDS as SECRET_MAPS
from dockyard.secrets import masked
from dockyard.spec import TrainingJobSpec
from dockyard.spot import Attempt, billable_seconds
from dockyard.status import JobStatus, SecondaryStatus, apply_transition
from dockyard.warm_pool import WarmPool
from dockyard.wire import to_pascal


class MetricValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric_name: str
    value: float
    timestamp: datetime
    host: str = "algo-1"


@dataclass(frozen=True)
class HostLine:
    """One line a job's container printed."""

    host: str  # algo-1, algo-2, ... (and `model`, a Clarify job's shadow model)
    at: datetime
    text: str


class RuleKind(StrEnum):
    DEBUG = "debug"  # on the scraped metrics (SageMaker: on saved tensors)
    PROFILER = "profiler"  # on the instances' system metrics


class RuleEvaluationStatus(StrEnum):
    IN_PROGRESS = "InProgress"  # watching the job
    NO_ISSUES_FOUND = "NoIssuesFound"  # the job ended and the rule found nothing wrong
    ISSUES_FOUND = "IssuesFound"  # the rule fired; StatusDetails says what it saw, and when
    ERROR = "Error"  # the rule could not run: StatusDetails says what it lacked


class RuleEvaluation(BaseModel):
    """One configured rule's verdict, as DescribeTrainingJob's *RuleEvaluationStatuses report it."""

    model_config = ConfigDict(frozen=True)

    rule_configuration_name: str
    kind: RuleKind
    status: RuleEvaluationStatus
    status_details: str | None = None
    last_modified_time: datetime


class SpotEvent(BaseModel):
    """One spot interruption the job went through."""

    model_config = ConfigDict(frozen=True)

    event: str
    at: datetime
    status: str  # the secondary status it hit


class JobRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: TrainingJobSpec
    creation_time: datetime
    status: JobStatus = JobStatus()
    last_modified_time: datetime | None = None
    training_start_time: datetime | None = None
    training_end_time: datetime | None = None
    failure_reason: str | None = None
    final_metrics: tuple[MetricValue, ...] = ()
    model_artifacts: str | None = None
    output_artifacts: str | None = None
    training_image: str | None = None
    training_image_digest: str | None = None
    flow_run_id: str | None = None
    attempts: tuple[Attempt, ...] = ()
    spot_events: tuple[SpotEvent, ...] = ()
    spot_price_ratio: float | None = None  # set for managed spot jobs
    scratch_root: str | None = None  # where the instances' folders are made, on the orchestrating machine
    stop_reason: StopReason | None = None  # why this attempt's containers are being stopped, once they are
    # Waiting for a worker's flow run (created through the SageMaker API, or handed
    # back to the work pool after its orchestrator died), which then carries it on.
    rule_evaluations: tuple[RuleEvaluation, ...] = ()  # one per Debugger and Profiler rule configured
    queued: bool = False
    work_pool: str | None = None  # the Prefect work pool a SageMaker API job runs from
    # CreateTrainingJob fields with no effect here (VpcConfig, TensorBoardOutputConfig, ...),
    # kept as sent so that DescribeTrainingJob answers them back.
    request_extras: dict[str, Any] = {}
    warm_pool: WarmPool | None = None  # the instances it kept, or took over (dockyard.warm_pool)
    exit_message: str | None = None  # a processing job's ExitMessage: its containers' /opt/ml/output/message

    @property
    def name(self) -> str:
        return self.spec.training_job_name

    @property
    def kind(self) -> str:
        """training or processing."""
        return self.spec.kind

    @property
    def explains(self) -> str | None:
        """The training job whose model this job's analysis explains (a Clarify job's), if any."""
        model = self.spec.processing.analyzed_model if self.spec.processing else None
        return model.training_job_name if model else None

    @property
    def secondary(self) -> SecondaryStatus:
        """The current secondary status; a stored record always has one (Starting at least)."""
        if self.status.secondary is None:
            raise ValueError(f"training job {self.name} has not started")
        return self.status.secondary

    def moved(self, to: SecondaryStatus, message: str, at: datetime) -> JobRecord:
        """This record with its status moved by the one status writer."""
        return self.model_copy(
            update={
                "status": apply_transition(self.status, to, message, at),
                "last_modified_time": at,
            }
        )

    def attempt_started(self, at: datetime) -> JobRecord:
        """A new stretch of running instances begins (an open one ends: its orchestrator restarted)."""
        attempts = list(self.ended_attempt(at, "orchestrator restarted").attempts)
        return self.model_copy(
            update={"attempts": (*attempts, Attempt(start=at)), "stop_reason": None, "last_modified_time": at}
        )

    def ended_attempt(self, at: datetime, ended_by: str = "") -> JobRecord:
        """This record with its open attempt, if any, ended at `at`."""
        if not self.attempts or self.attempts[-1].end is not None:
            return self
        last = self.attempts[-1].model_copy(update={"end": at, "ended_by": ended_by})
        return self.model_copy(update={"attempts": (*self.attempts[:-1], last), "last_modified_time": at})

    def training_seconds(self) -> int | None:
        if self.training_start_time is None or self.training_end_time is None:
            return None
        return max(1, math.ceil((self.training_end_time - self.training_start_time).total_seconds()))

    def billable_seconds(self) -> int | None:
        """SageMaker's BillableTimeInSeconds: the training time on demand; for
        managed spot, the instances' running time scaled by the spot price."""
        seconds = self.training_seconds()
        if seconds is None or self.spot_price_ratio is None or not self.attempts:
            return seconds
        return min(
            seconds,
            billable_seconds(self.attempts, self.spot_price_ratio, self.training_end_time or self.creation_time),
        )

    def _usd(self, seconds: int | None) -> float | None:
        itype = INSTANCE_TYPES.get(self.spec.resource_config.instance_type)
        if seconds is None or itype is None:
            return None
        return round(seconds / 3600 * itype.price_per_hour * self.spec.resource_config.instance_count, 6)

    def cost_usd(self) -> float | None:
        """What the billable time costs at the instance type's on-demand price, all instances."""
        return self._usd(self.billable_seconds())

    def spot_savings(self) -> tuple[float, float] | None:
        """(percent, USD) saved against running the same time on demand, or None."""
        training, billable = self.training_seconds(), self.billable_seconds()
        if self.spot_price_ratio is None or not training or billable is None:
            return None
        return round((1 - billable / training) * 100, 1), round(
            (self._usd(training) or 0) - (self._usd(billable) or 0), 6
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def describe_processing(record: JobRecord) -> dict[str, Any]:
    """A processing job's record as a DescribeProcessingJob response body."""
    spec = record.spec.processing
    if spec is None:
        raise ValueError(f"{record.name} is a training job")
    shown = spec.model_copy(update={"environment": masked(record.spec.environment)})  # carried on the job's spec
    body: dict[str, Any] = to_pascal(shown.model_dump(mode="json", exclude_none=True, exclude={"analyzed_model"}))
    body.pop("Tags", None)  # ListTags answers them
    body.update(
        {
            "ProcessingJobArn": job_arn(record.name, "processing-job"),
            "ProcessingJobStatus": record.status.primary.value,
            "ExitMessage": record.exit_message,
            "FailureReason": record.failure_reason,
            "CreationTime": _iso(record.creation_time),
            "LastModifiedTime": _iso(record.last_modified_time),
            "ProcessingStartTime": _iso(record.training_start_time),
            "ProcessingEndTime": _iso(record.training_end_time),
            "PrefectFlowRunId": record.flow_run_id,
        }
    )
    return {k: v for k, v in body.items() if v is not None}


def describe(record: JobRecord, at: datetime | None = None) -> dict[str, Any]:
    """The record as a DescribeTrainingJob response body (as of `at`, default now)."""
    shown = record.spec.model_copy(update={kind: masked(getattr(record.spec, kind)) for kind in SECRET_MAPS})
    spec = to_pascal(shown.model_dump(mode="json", exclude_none=True))
    seconds = record.training_seconds()
    body: dict[str, Any] = {
        **spec,
        "TrainingJobArn": job_arn(record.name),
        "TrainingJobStatus": record.status.primary.value,
        "SecondaryStatus": record.status.secondary.value if record.status.secondary else None,
        "CreationTime": _iso(record.creation_time),
        "LastModifiedTime": _iso(record.last_modified_time),
        "TrainingStartTime": _iso(record.training_start_time),
        "TrainingEndTime": _iso(record.training_end_time),
        "SecondaryStatusTransitions": [
            {
                "Status": t.status.value,
                "StartTime": _iso(t.start_time),
                "EndTime": _iso(t.end_time),
                "StatusMessage": t.status_message,
            }
            for t in record.status.transitions
        ],
        "FinalMetricDataList": [
            {"MetricName": m.metric_name, "Value": m.value, "Timestamp": _iso(m.timestamp)}
            for m in record.final_metrics
        ],
        "ModelArtifacts": {"S3ModelArtifacts": record.model_artifacts} if record.model_artifacts else None,
        "OutputArtifacts": record.output_artifacts,
        "TrainingImageDigest": record.training_image_digest,
        "TrainingTimeInSeconds": seconds,
        "BillableTimeInSeconds": record.billable_seconds(),
        "CostUSD": record.cost_usd(),
        "FailureReason": record.failure_reason,
        "PrefectFlowRunId": record.flow_run_id,
    }
    savings = record.spot_savings()
    if savings is not None:
        body["SpotSavingsPercent"], body["SpotSavingsUSD"] = savings
        body["SpotInterruptions"] = [
            {"Event": e.event, "Time": _iso(e.at), "DuringStatus": e.status} for e in record.spot_events
        ]
    if record.attempts:
        body["Attempts"] = [
            {"StartTime": _iso(a.start), "EndTime": _iso(a.end), "EndedBy": a.ended_by} for a in record.attempts
        ]
    for kind, key in (
        (RuleKind.DEBUG, "DebugRuleEvaluationStatuses"),
        (RuleKind.PROFILER, "ProfilerRuleEvaluationStatuses"),
    ):
        mine = [e for e in record.rule_evaluations if e.kind is kind]
        if mine:
            body[key] = [
                {
                    "RuleConfigurationName": e.rule_configuration_name,
                    "RuleEvaluationStatus": e.status.value,
                    "LastModifiedTime": _iso(e.last_modified_time),
                }
                | ({"StatusDetails": e.status_details} if e.status_details else {})
                for e in mine
            ]
    body["ProfilingStatus"] = "Enabled" if record.spec.profiling else "Disabled"
    if record.warm_pool is not None:
        body["WarmPoolStatus"] = record.warm_pool.shown(at or datetime.now(UTC))
    for key, value in record.request_extras.items():
        body.setdefault(key, value)
    algo = body.setdefault("AlgorithmSpecification", {})
    if record.training_image:
        algo.setdefault("TrainingImage", record.training_image)
    return {k: v for k, v in body.items() if v is not None}
