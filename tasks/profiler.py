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
from collections.abc import Callable
from pathlib import Path

from dockyard import debugger, profiler_report
from dockyard.debugger import Action
from dockyard.profiling import Reading, SystemSample, file_key, sagemaker_records, sample_between
from dockyard.record import JobRecord, MetricValue, RuleEvaluation, RuleEvaluationStatus
from dockyard.rule_checks import Evidence
from dockyard.settings import Settings
from dockyard.spec import RuleConfiguration, TrainingJobSpec
from infra import job_log, prefect_api, storage, system_metrics
from infra.job_store import now, open_store
from tasks.provision import HostPlan, ProvisionPlan

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

    def __init__(self, plan: HostPlan, container_id: str) -> None:
        self.host, self.container_id = plan.host, container_id
        self.vcpus = (plan.nano_cpus or 0) / 1e9 or plan.num_cpus  # what it may use: its cap, else the host's
        # The GPU indices for NVML: None for none, () for every one of the host's.
        self.gpus = None if plan.gpu_device_ids is None else tuple(int(i) for i in plan.gpu_device_ids)
        self.pid: int | None = None
        self.located = False  # whether its process was looked for (when it is first sampled, not before)
        self.last: Reading | None = None

    def sample(self) -> SystemSample | None:
        if not self.located:
            self.pid, self.located = system_metrics.main_pid(self.container_id), True
        reading = system_metrics.read(self.container_id, self.pid)
        before, self.last = self.last, reading
        if before is None:
            return None
        # The GPUs are this machine's: read them only for a container that runs here.
        gpus = system_metrics.gpus(self.gpus) if self.pid is not None else ()
        return sample_between(self.host, before, reading, self.vcpus, now(), gpus)


class Profiler(threading.Thread):
    """Samples the job's containers and evaluates its rules until `finish`. Nothing it does
    changes how the job ends: a failure of its own is a warning in the job's log."""

    def __init__(
        self,
        spec: TrainingJobSpec,
        provisioned: ProvisionPlan,
        containers: dict[str, str],
        settings: Settings,
        scrapes: bool,
    ) -> None:
        """`scrapes`: whether the job has metric definitions (monitor compiled them), so steps can be seen."""
        super().__init__(name=f"profiler-{spec.training_job_name}", daemon=True)
        self.spec, self.settings, self.name, self.scrapes = spec, settings, spec.training_job_name, scrapes
        self.store = open_store(settings)
        self.rules = {c.rule_configuration_name: c for _, c in debugger.configured(spec)}
        plans = {h.host: h for h in provisioned.hosts}
        self.instances = [_Instance(plans[h], cid) for h, cid in containers.items()] if spec.profiling else []
        self.samples: list[SystemSample] = []
        self.unwritten: list[SystemSample] = []
        self.unsent: set[str] = set()  # the minute files with samples not uploaded yet
        self.halt = threading.Event()
        self.failures = 0
        self.context = contextvars.copy_context()  # Prefect's settings and run context

    @property
    def needed(self) -> bool:
        return bool(self.instances or self.rules)

    def run(self) -> None:
        self.context.run(self._loop)

    def _loop(self) -> None:
        if self.instances:
            self._guarded(self._load)
        interval = self.spec.profiling_interval_seconds if self.instances else RULE_SECONDS
        next_look, next_upload = time.monotonic() + RULE_SECONDS, time.monotonic() + UPLOAD_SECONDS
        while not self.halt.wait(max(0.0, interval - self._sample())):
            if time.monotonic() >= next_look:
                # The rules read the whole history: looked at less often as it grows (every 2 s up
                # to 10,000 samples, every 20 s at 100,000), so they never crowd out the sampling.
                next_look = time.monotonic() + max(RULE_SECONDS, len(self.samples) / 5000)
                self._guarded(self._write)
                self._guarded(lambda: self._evaluate(final=False))
            if time.monotonic() >= next_upload:
                next_upload = time.monotonic() + UPLOAD_SECONDS
                self._guarded(self._upload)

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one round's failure must not end the profiling
            self._warn(f"{exc.__class__.__name__}: {exc}")

    def _load(self) -> None:
        """The samples an earlier orchestrator of this job took (it was restarted, or taken over)."""
        self.samples = self.store.samples(self.name) + self.samples
        if self.samples:
            self.unsent.add(file_key(self.samples[-1]))  # its last minute may not have been uploaded

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
        if self.failures in (1, 10, 100, 1000):  # a few, not one per interval
            job_log.report(self.settings.home, self.name, f"profiler: {message}", logging.WARNING)

    def _write(self) -> None:
        """The samples since the last write, to the job store."""
        batch, self.unwritten = self.unwritten, []
        self.unsent.update(file_key(s) for s in batch)
        self.store.add_samples(self.name, batch)

    def _upload(self) -> None:
        """The minute files with new samples, each written whole from every sample of its minute
        (an earlier orchestrator's included) and uploaded."""
        keys, self.unsent = self.unsent, set()
        if not keys:
            return
        folder, prefix = local_folder(self.settings.home, self.name), profiler_prefix(self.spec)
        lines: dict[str, list[str]] = {key: [] for key in keys}
        for sample in self.samples:
            key = file_key(sample)
            if key in lines:
                lines[key] += [json.dumps(r) for r in sagemaker_records(sample)]
        try:
            for key, text in sorted(lines.items()):
                path = folder / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(text) + "\n")
                storage.upload_file(str(path), storage.join(prefix, key), self.settings.s3_endpoint_url)
        except Exception:
            self.unsent |= keys  # sent again at the next round, or at the end
            raise

    def _evaluate(self, final: bool) -> None:
        if not self.rules:
            return
        record = self.store.get(self.name)
        evidence = Evidence(
            samples=tuple(self.samples),
            metrics=tuple(self.store.metrics(self.name)),
            training_started=record.training_start_time,
            scrapes_metrics=self.scrapes,
            at=now(),
        )
        changed: dict[str, tuple[RuleEvaluation, RuleEvaluation]] = {}
        for before in record.rule_evaluations:
            config = self.rules.get(before.rule_configuration_name)
            if config is None:
                continue
            try:
                after = debugger.evaluate(config, before, evidence, final)
            except Exception as exc:  # noqa: BLE001 - a rule that breaks says so, and the others go on
                after = before.model_copy(
                    update={"status": RuleEvaluationStatus.ERROR, "status_details": f"the rule failed: {exc}",
                            "last_modified_time": evidence.at}
                )  # fmt: skip
            if after != before:
                changed[before.rule_configuration_name] = (before, after)
        if not changed:
            return
        applied: list[RuleEvaluation] = []

        def edit(r: JobRecord) -> JobRecord:
            # Only over the verdicts these were worked out from: a write that lost the race to
            # `finish` (or to another round) must not undo what that one wrote.
            applied.clear()
            kept = []
            for e in r.rule_evaluations:
                before, after = changed.get(e.rule_configuration_name, (None, None))
                if after is not None and e == before:
                    kept.append(after)
                    applied.append(after)
                else:
                    kept.append(e)
            return r.model_copy(update={"rule_evaluations": tuple(kept)})

        self.store.change(self.name, edit)
        for evaluation in applied:
            self._announce(self.rules[evaluation.rule_configuration_name], evaluation, final)

    def _announce(self, config: RuleConfiguration, evaluation: RuleEvaluation, final: bool) -> None:
        rule = debugger.rule_name(config)
        said = f"rule {evaluation.rule_configuration_name} ({rule}): {evaluation.status.value}"
        details = f" — {evaluation.status_details}" if evaluation.status_details else ""
        job_log.report(self.settings.home, self.name, said + details)
        if evaluation.status is not RuleEvaluationStatus.ISSUES_FOUND:
            return
        prefect_api.emit_rule_event(self.name, evaluation.rule_configuration_name, rule, evaluation.status_details)
        if not final:  # at the end there is nothing left to stop
            for action in debugger.actions(config):
                self._act(action, evaluation)

    def _act(self, action: Action, evaluation: RuleEvaluation) -> None:
        if action.name == "stoptraining":
            if action.target and not self.name.lower().startswith(action.target):
                said = f"StopTraining names jobs starting {action.target}: not this one"
                job_log.report(self.settings.home, self.name, said)
                return
            reason = f"rule {evaluation.rule_configuration_name} found issues ({evaluation.status_details})"
            self.store.request_stop(self.name, reason)
            job_log.report(self.settings.home, self.name, f"StopTraining: {reason}")
        else:  # email, sms: whom to tell stays out of the log; the event is what an automation sends on
            job_log.report(
                self.settings.home,
                self.name,
                f"{action.name} action: sent by a Prefect automation on event {prefect_api.RULE_EVENT}",
            )

    def finish(self, final: bool) -> None:
        """Stop sampling; store and upload what was taken; evaluate the rules once more (`final`:
        the job is over, so a rule that found nothing says so). Never raises."""
        self.halt.set()
        if self.is_alive():
            self.join(timeout=30)
        self._guarded(self._write)
        self._guarded(lambda: self._evaluate(final))
        if self.instances:
            self._guarded(self._upload)


def write_report(record: JobRecord, settings: Settings, metrics: list[MetricValue]) -> None:
    """The profiler report of a job that profiled or had rules, as it ended, with its scraped
    `metrics`: beside its log, at SageMaker's place under the outputs, and linked from the flow
    run as a Prefect artifact."""
    if not (record.spec.profiling or record.rule_evaluations):
        return
    name = record.name
    try:
        store = open_store(settings)
        page = profiler_report.render(record, store.samples(name), metrics)
        path = local_folder(settings.home, name) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page)
        uri = report_uri(record.spec)
        storage.upload_file(str(path), uri, settings.s3_endpoint_url)
        job_log.report(settings.home, name, f"profiler report: {uri}")
        prefect_api.link_artifact(f"profiler-{name.lower()}"[:90].rstrip("-"), uri, f"profiler report of {name}")
    except Exception as exc:  # noqa: BLE001 - the job ended as it ended, report or not
        job_log.report(settings.home, name, f"profiler report not written: {exc}", logging.WARNING)
