"""Beside monitor: each instance's system metrics at the profiling interval, and
the job's Debugger and Profiler rules evaluated on them and on the scraped metrics.

Samples go to the job store (with the job), to SageMaker-shaped files under the
profiler's output path, and at the end to the profiler report. A rule that
fires is recorded (IssuesFound, what it saw and when), emits a Prefect event
(`dockyard.rule.issues-found`, for automations that notify someone), and runs
its actions: StopTraining asks the job to stop, as `dockyard jobs stop` does.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from dockyard import debugger, profiler_report
from dockyard.debugger import Action
from dockyard.profiling import Reading, SystemSample, file_key, sagemaker_records, sample_between
from dockyard.record import JobRecord, RuleEvaluation, RuleEvaluationStatus
from dockyard.rule_checks import Evidence
from dockyard.settings import Settings
from dockyard.spec import RuleConfiguration, TrainingJobSpec
from infra import job_log, prefect_api, storage, system_metrics
from infra.job_store import now, open_store
from tasks.provision import ProvisionPlan

RULE_SECONDS = 2.0  # how often the rules look, and samples are written
UPLOAD_SECONDS = 60.0  # how often the profiler's files are uploaded while the job runs
REPORT_FILE = "profiler-report.html"


def profiler_prefix(spec: TrainingJobSpec) -> str:
    """Where the job's system-metric files go: `BASE/JOB/profiler-output`, BASE being
    profiler_config.s3_output_path or else the output path."""
    config = spec.profiler_config
    base = (config.s3_output_path if config else None) or spec.output_data_config.s3_output_path
    return storage.join(base, spec.training_job_name, "profiler-output")


def report_uri(spec: TrainingJobSpec) -> str:
    """Where the report goes, as SageMaker's ProfilerReport rule writes it: under the
    ProfilerReport configuration's name when there is one."""
    named = [c for c in spec.profiler_rule_configurations if debugger.rule_name(c) == "ProfilerReport"]
    folder = named[0].rule_configuration_name if named else "ProfilerReport"
    out = spec.output_data_config.s3_output_path
    return storage.join(out, spec.training_job_name, "rule-output", folder, "profiler-output", REPORT_FILE)


def local_folder(home: str | Path, name: str) -> Path:
    return job_log.path(home, name).parent / "profiler-output"


class _Instance:
    """One container being sampled: its last reading, for the next interval's rates."""

    def __init__(self, host: str, container_id: str, vcpus: float, gpus: tuple[int, ...] | None) -> None:
        self.host, self.container_id, self.vcpus, self.gpus = host, container_id, vcpus, gpus
        self.pid = system_metrics.main_pid(container_id)
        self.last: Reading | None = None

    def sample(self) -> SystemSample | None:
        reading = system_metrics.read(self.container_id, self.pid)
        before, self.last = self.last, reading
        if before is None:
            return None
        return sample_between(self.host, before, reading, self.vcpus, now(), system_metrics.gpus(self.gpus))


class Profiler(threading.Thread):
    """Samples the job's containers and evaluates its rules until `finish`."""

    def __init__(
        self, spec: TrainingJobSpec, provisioned: ProvisionPlan, containers: dict[str, str], settings: Settings
    ) -> None:
        super().__init__(name=f"profiler-{spec.training_job_name}", daemon=True)
        self.spec, self.settings, self.name = spec, settings, spec.training_job_name
        self.store = open_store(settings)
        self.rules = {c.rule_configuration_name: c for _, c in debugger.configured(spec)}
        plans = {h.host: h for h in provisioned.hosts}
        self.instances = [
            _Instance(host, cid, (plans[host].nano_cpus or 0) / 1e9 or plans[host].num_cpus, _gpu_ids(plans[host]))
            for host, cid in containers.items()
        ] if spec.profiling else []  # fmt: skip
        self.samples: list[SystemSample] = self.store.samples(self.name) if spec.profiling else []
        self.unwritten: list[SystemSample] = []
        self.halt = threading.Event()
        self.failures = 0
        self.context = contextvars.copy_context()  # Prefect's settings and run context

    @property
    def needed(self) -> bool:
        return bool(self.instances or self.rules)

    def run(self) -> None:
        self.context.run(self._loop)

    def _loop(self) -> None:
        interval = self.spec.profiling_interval_seconds if self.instances else RULE_SECONDS
        next_look, next_upload = time.monotonic() + RULE_SECONDS, time.monotonic() + UPLOAD_SECONDS
        while not self.halt.wait(max(0.0, interval - self._sample())):
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + RULE_SECONDS
                self._write()
                self._evaluate(final=False)
            if time.monotonic() >= next_upload:
                next_upload = time.monotonic() + UPLOAD_SECONDS
                self._upload()

    def _sample(self) -> float:
        """Take one sample of every instance; returns the seconds it took."""
        started = time.monotonic()
        for instance in self.instances:
            try:
                taken = instance.sample()
            except Exception as exc:  # noqa: BLE001 - an instance that ended, or a slow engine, is no failure
                self._warn(f"system metrics of {instance.host} not read: {exc}")
                continue
            if taken is not None:
                self.samples.append(taken)
                self.unwritten.append(taken)
        return time.monotonic() - started

    def _warn(self, message: str) -> None:
        self.failures += 1
        if self.failures in (1, 10, 100):  # a few, not one per interval
            job_log.report(self.settings.home, self.name, f"profiler: {message}", logging.WARNING)

    def _write(self) -> None:
        """The samples since the last write, to the job store and the minute files."""
        batch, self.unwritten = self.unwritten, []
        if not batch:
            return
        try:
            self.store.add_samples(self.name, batch)
        except Exception as exc:  # noqa: BLE001 - kept in memory for the rules and the report
            self._warn(f"system metrics not stored: {exc}")
        folder = local_folder(self.settings.home, self.name)
        for sample in batch:
            path = folder / file_key(sample)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in sagemaker_records(sample))

    def _upload(self) -> None:
        folder = local_folder(self.settings.home, self.name)
        prefix = profiler_prefix(self.spec)
        try:
            for path in sorted(folder.rglob("*.json")):
                key = path.relative_to(folder).as_posix()
                storage.upload_file(str(path), storage.join(prefix, key), self.settings.s3_endpoint_url)
        except Exception as exc:  # noqa: BLE001 - uploaded again at the next round, and at the end
            self._warn(f"system metric files not uploaded to {prefix}: {exc}")

    def _evaluate(self, final: bool) -> JobRecord | None:
        if not self.rules:
            return None
        try:
            record = self.store.get(self.name)
            evidence = Evidence(
                samples=tuple(self.samples),
                metrics=tuple(self.store.metrics(self.name)),
                training_started=record.training_start_time,
                at=now(),
            )
        except Exception as exc:  # noqa: BLE001 - the store is away: the rules look again next round
            self._warn(f"rules not evaluated: {exc}")
            return None
        changed = {}
        for before in record.rule_evaluations:
            config = self.rules.get(before.rule_configuration_name)
            after = debugger.evaluate(config, before, evidence, final) if config else before
            if after is not before:
                changed[after.rule_configuration_name] = after
        if not changed:
            return record

        def edit(r: JobRecord) -> JobRecord:
            updated = tuple(changed.get(e.rule_configuration_name, e) for e in r.rule_evaluations)
            return r.model_copy(update={"rule_evaluations": updated})

        record = self.store.change(self.name, edit)
        for evaluation in changed.values():
            self._announce(self.rules[evaluation.rule_configuration_name], evaluation)
        return record

    def _announce(self, config: RuleConfiguration, evaluation: RuleEvaluation) -> None:
        rule = debugger.rule_name(config)
        said = f"rule {evaluation.rule_configuration_name} ({rule}): {evaluation.status.value}"
        details = f" — {evaluation.status_details}" if evaluation.status_details else ""
        job_log.report(self.settings.home, self.name, said + details)
        if evaluation.status is not RuleEvaluationStatus.ISSUES_FOUND:
            return
        prefect_api.emit_rule_event(self.name, evaluation.rule_configuration_name, rule, evaluation.status_details)
        for action in debugger.actions(config):
            self._act(action, evaluation)

    def _act(self, action: Action, evaluation: RuleEvaluation) -> None:
        if action.name == "stoptraining":
            if action.target and not self.name.lower().startswith(action.target):
                job_log.report(
                    self.settings.home, self.name, f"StopTraining names prefix {action.target}: not this job"
                )
                return
            reason = f"rule {evaluation.rule_configuration_name} found issues ({evaluation.status_details})"
            self.store.request_stop(self.name, reason)
            job_log.report(self.settings.home, self.name, f"StopTraining: {reason}")
        else:  # email, sms: the event above is what a Prefect automation sends on
            job_log.report(
                self.settings.home,
                self.name,
                f"{action.name} to {action.target}: sent by a Prefect automation on event dockyard.rule.issues-found",
            )

    def finish(self, final: bool) -> JobRecord | None:
        """Stop sampling; write and upload what was taken; evaluate the rules once more (`final`:
        the job is over, so a rule that found nothing says so). Returns the record as evaluated."""
        self.halt.set()
        if self.is_alive():
            self.join(timeout=30)
        self._write()
        record = self._evaluate(final)
        if self.instances:
            self._upload()
        return record


def write_report(record: JobRecord, settings: Settings) -> None:
    """The profiler report of a job that profiled or had rules, as it ended: beside its log, at
    SageMaker's place under the outputs, and linked from the flow run as a Prefect artifact."""
    if not (record.spec.profiling or record.rule_evaluations):
        return
    name = record.name
    try:
        store = open_store(settings)
        page = profiler_report.render(record, store.samples(name), store.metrics(name))
        path = local_folder(settings.home, name) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page)
        uri = report_uri(record.spec)
        storage.upload_file(str(path), uri, settings.s3_endpoint_url)
        job_log.report(settings.home, name, f"profiler report: {uri}")
        prefect_api.link_artifact(f"profiler-{name.lower()}"[:90].rstrip("-"), uri, f"profiler report of {name}")
    except Exception as exc:  # noqa: BLE001 - the job ended as it ended, report or not
        job_log.report(settings.home, name, f"profiler report not written: {exc}", logging.WARNING)


def _gpu_ids(plan: Any) -> tuple[int, ...] | None:
    """The host's GPU indices for NVML: None for none, () for every one."""
    if plan.gpu_device_ids is None:
        return None
    return tuple(int(i) for i in plan.gpu_device_ids)
