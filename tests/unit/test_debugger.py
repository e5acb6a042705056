"""Debugger and Profiler rules: configurations checked as spec errors, and each
rule's check on series whose answer is known."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard import debugger
from dockyard.errors import JobSpecError
from dockyard.loading import build_job
from dockyard.profiling import GpuSample, SystemSample
from dockyard.record import MetricValue, RuleEvaluation, RuleEvaluationStatus, RuleKind
from dockyard.rule_checks import Evidence
from dockyard.rules import HostFacts, check_job
from dockyard.spec import RuleConfiguration

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
HOST = HostFacts(cpus=2, memory_bytes=24 * 1024**3, gpus=0)
S = RuleEvaluationStatus


def job(**changes: Any) -> dict[str, Any]:
    return {
        "training_job_name": "job-1",
        "algorithm_specification": {"training_image": "probe:latest"},
        "output_data_config": {"s3_output_path": "s3://b/out"},
        **changes,
    }


def problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(JobSpecError) as err:
        check_job(build_job(d, home="/h", now=T0), HOST)
    return [str(p) for p in err.value.problems]


def rule(name: str, **params: str) -> dict[str, Any]:
    return {"rule_configuration_name": name, "rule_parameters": {"rule_to_invoke": name, **params}}


def test_a_sagemaker_sdk_request_with_rules_and_a_stop_action_is_accepted_as_sent() -> None:
    action = '[{\\"name\\": \\"stoptraining\\", \\"training_job_prefix\\": \\"job-1\\"}]'  # as the SDK escapes it
    body = {
        "TrainingJobName": "job-1",
        "AlgorithmSpecification": {"TrainingImage": "probe:latest", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::111122223333:role/R",
        "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "DebugHookConfig": {"S3OutputPath": "s3://b/out", "CollectionConfigurations": [
            {"CollectionName": "losses", "CollectionParameters": {"save_interval": "500"}}]},
        "DebugRuleConfigurations": [{
            "RuleConfigurationName": "LossNotDecreasing",
            "RuleEvaluatorImage": "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest",
            "RuleParameters": {"rule_to_invoke": "LossNotDecreasing", "num_steps": "20", "action_json": action},
        }],
        "ProfilerConfig": {"S3OutputPath": "s3://b/out", "DisableProfiler": False},
        "ProfilerRuleConfigurations": [
            {"RuleConfigurationName": "CPUBottleneck", "RuleEvaluatorImage": "img", "RuleParameters": {
                "threshold": "50", "gpu_threshold": "10", "cpu_threshold": "90", "patience": "1000",
                "scan_interval_us": "60000000", "rule_to_invoke": "CPUBottleneck"}},
            {"RuleConfigurationName": "ProfilerReport-1700000000", "RuleEvaluatorImage": "img", "RuleParameters": {
                "CPUBottleneck_threshold": "90", "StepOutlier_mode": "None", "rule_to_invoke": "ProfilerReport"}},
        ],
    }  # fmt: skip
    spec = build_job(body, home="/h", now=T0)
    check_job(spec, HOST)
    assert spec.profiling and spec.profiling_interval_seconds == 0.5
    assert spec.debug_hook_config is not None and spec.debug_hook_config.collection_configurations[0].collection_name
    loss = spec.debug_rule_configurations[0]
    assert debugger.actions(loss) == [debugger.Action("stoptraining", "job-1")]
    assert debugger.parameters(loss)["num_steps"] == 20
    report = debugger.parameters(spec.profiler_rule_configurations[1])
    assert report["rules"]["CPUBottleneck"]["threshold"] == 90 and report["rules"]["IOBottleneck"]["threshold"] == 50


def test_bad_rule_configurations_are_spec_errors_that_name_the_field_and_the_fix() -> None:
    found = problems(
        job(
            debug_rule_configurations=[
                rule("LossNotDecresing"),
                rule("LowGPUUtilization"),
                rule("Overfit", ratio_treshold="0.2"),
                rule("Overtraining", patience_train="-1", action_json='{"name": "page"}'),
            ],
            profiler_rule_configurations=[rule("CPUBottleneck", threshold="150"), rule("Dataloader")],
            profiler_config={"disable_profiler": True},
        )
    )
    assert found == [
        "debug_rule_configurations[0].rule_parameters.rule_to_invoke: 'LossNotDecresing' is not a built-in rule "
        "dockyard evaluates — did you mean 'LossNotDecreasing'?",
        "debug_rule_configurations[1]: LowGPUUtilization is a profiler rule — move it to profiler_rule_configurations",
        "debug_rule_configurations[2].rule_parameters.ratio_treshold: Overfit has no parameter 'ratio_treshold' — "
        "did you mean 'ratio_threshold'?",
        "debug_rule_configurations[3].rule_parameters.patience_train: -1 is out of range: use a value at least 1",
        "debug_rule_configurations[3].rule_parameters.action_json: names an unknown action 'page': "
        "use stoptraining, email or sms",
        "profiler_rule_configurations[0].rule_parameters.threshold: 150 is out of range: use a value from 0 to 100",
        "profiler_rule_configurations[1].rule_parameters.rule_to_invoke: 'Dataloader' is not a built-in rule dockyard "
        "evaluates — it needs framework traces, which dockyard does not record; ProfilerReport covers the rest",
        "profiler_config.disable_profiler: profiler rules need the system metrics it turns off — remove "
        "disable_profiler, or the profiler_rule_configurations",
    ]


def test_values_that_are_no_numbers_regexes_or_actions_are_spec_errors_and_report_keys_take_any_case() -> None:
    found = problems(
        job(
            debug_rule_configurations=[
                rule("Overfit", ratio_threshold="nan", start_step="1e999"),
                rule("LossNotDecreasing", tensor_regex="(loss", action_json='{"name": ["stoptraining"]}'),
                rule("Overtraining", delta="0", patience_train="2.5"),
            ],
            profiler_rule_configurations=[
                rule("ProfilerReport", cpubottleneck_threshold="90", lowgpuutilization_window="0")
            ],
        )
    )
    assert found == [
        "debug_rule_configurations[0].rule_parameters.ratio_threshold: 'nan' is not a finite number",
        "debug_rule_configurations[0].rule_parameters.start_step: '1e999' is not a finite number",
        "debug_rule_configurations[1].rule_parameters.tensor_regex: is no regex (missing ), unterminated subpattern at "
        "position 0)",
        "debug_rule_configurations[1].rule_parameters.action_json: names an unknown action ['stoptraining']: "
        "use stoptraining, email or sms",
        "debug_rule_configurations[2].rule_parameters.patience_train: '2.5' is not a whole number",
        "profiler_rule_configurations[0].rule_parameters.lowgpuutilization_window: 0 is out of range: use a value at "
        "least 1",
    ]
    report = RuleConfiguration.model_validate(rule("ProfilerReport", cpubottleneck_threshold="90"))
    assert debugger.parameters(report)["rules"]["CPUBottleneck"]["threshold"] == 90


def test_an_interval_sagemaker_does_not_accept_and_a_repeated_name_are_spec_errors() -> None:
    found = problems(job(profiler_config={"profiling_interval_in_milliseconds": 300}))
    assert found == [
        "profiler_config.profiling_interval_in_milliseconds: 300 ms is not an interval SageMaker accepts — "
        "use one of 100, 200, 500, 1000, 5000, 60000"
    ]
    twice = problems(job(debug_rule_configurations=[rule("Overfit"), rule("Overfit")]))
    assert twice == [
        "debug_rule_configurations[1].rule_configuration_name: 'Overfit' is used twice — "
        "give each rule configuration its own name"
    ]


def sample(i: int, cpu: float, gpu: float | None = None, memory: float = 0.0, host: str = "algo-1") -> SystemSample:
    gpus = (
        (
            GpuSample(
                index=0, utilization_percent=gpu, memory_used_bytes=int(memory * 1e9), memory_total_bytes=int(100e9)
            ),
        )
        if gpu is not None
        else ()
    )
    return SystemSample(
        host=host,
        timestamp=T0 + timedelta(seconds=i),
        cpu_percent=cpu,
        memory_bytes=2**30,
        memory_limit_bytes=2**32,
        gpus=gpus,
    )


def loss(values: list[float], name: str = "loss") -> tuple[MetricValue, ...]:
    return tuple(
        MetricValue(metric_name=name, value=v, timestamp=T0 + timedelta(seconds=i)) for i, v in enumerate(values)
    )


def verdict(config: dict[str, Any], ev: Evidence, final: bool = False) -> RuleEvaluation:
    c = RuleConfiguration.model_validate(config)
    kind = debugger.kind_of(debugger.rule_name(c))
    assert kind is not None
    start = RuleEvaluation(rule_configuration_name=c.rule_configuration_name, kind=kind, status=S.IN_PROGRESS,
                           last_modified_time=T0)  # fmt: skip
    return debugger.evaluate(c, start, ev, final)


def test_loss_not_decreasing_fires_on_a_plateau_and_not_on_a_falling_loss() -> None:
    falling = Evidence(metrics=loss([1 / (i + 1) for i in range(40)]), at=T0)
    plateau = Evidence(metrics=loss([1 / (i + 1) for i in range(12)] + [0.08] * 20), at=T0)
    config = rule("LossNotDecreasing", num_steps="10")
    assert verdict(config, falling).status is S.IN_PROGRESS
    assert verdict(config, falling, final=True).status is S.NO_ISSUES_FOUND
    fired = verdict(config, plateau)
    assert fired.status is S.ISSUES_FOUND
    assert fired.status_details and fired.status_details.startswith("loss on algo-1 went from 0.08 to 0.08")
    # Wanting a 10% fall each 10 values: 1/(i+1) falls less than that past the first few.
    assert verdict(rule("LossNotDecreasing", num_steps="10", diff_percent="60"), falling).status is S.ISSUES_FOUND


def test_a_regex_matching_every_metric_watches_only_the_losses_as_sagemaker_s_losses_collection() -> None:
    accuracy = tuple(
        MetricValue(metric_name="accuracy", value=i / 40, timestamp=T0 + timedelta(seconds=i)) for i in range(40)
    )
    ev = Evidence(metrics=loss([1 / (i + 1) for i in range(40)]) + accuracy, at=T0)  # accuracy rises, as it should
    assert verdict(rule("LossNotDecreasing", tensor_regex=".*"), ev, final=True).status is S.NO_ISSUES_FOUND
    every = rule("LossNotDecreasing", tensor_regex=".*", use_losses_collection="False")
    assert verdict(every, ev).status is S.ISSUES_FOUND  # told to watch everything, it does


def test_a_debugger_rule_whose_metric_never_appears_ends_in_error_saying_what_to_set() -> None:
    ev = Evidence(metrics=loss([1.0, 0.5], name="accuracy"), at=T0)
    assert verdict(rule("LossNotDecreasing"), ev).status is S.IN_PROGRESS
    ended = verdict(rule("LossNotDecreasing"), ev, final=True)
    assert ended.status is S.ERROR
    assert ended.status_details and "set rule_parameters.metric_names" in ended.status_details


def test_overfit_and_overtraining_on_training_and_validation_curves() -> None:
    train = [1 / (i + 1) for i in range(30)]
    valid = [max(0.3, 1 / (i + 1)) for i in range(30)]  # stops improving at 0.3 while training goes on
    ev = Evidence(metrics=loss(train, "train_loss") + loss(valid, "validation_loss"), at=T0)
    overfit = verdict(rule("Overfit", patience="3", ratio_threshold="0.5"), ev)
    assert overfit.status is S.ISSUES_FOUND and "validation_loss" in (overfit.status_details or "")
    overtraining = verdict(rule("Overtraining", patience_validation="5", delta="0.001"), ev)
    assert overtraining.status is S.ISSUES_FOUND and "validation_loss on algo-1" in (overtraining.status_details or "")
    healthy = Evidence(metrics=loss(train, "train_loss") + loss(train, "validation_loss"), at=T0)
    assert verdict(rule("Overfit"), healthy, final=True).status is S.NO_ISSUES_FOUND


def test_cpu_bottleneck_needs_more_samples_than_its_patience_and_a_busy_share_above_its_threshold() -> None:
    busy = Evidence(samples=tuple(sample(i, cpu=99.0 if i % 4 else 20.0) for i in range(40)), at=T0)  # 75% busy
    assert verdict(rule("CPUBottleneck", patience="50"), busy).status is S.IN_PROGRESS  # not enough samples yet
    fired = verdict(rule("CPUBottleneck", patience="20"), busy)
    assert fired.status is S.ISSUES_FOUND and "CPU above 90% in 75% of 40 samples" in (fired.status_details or "")
    assert verdict(rule("CPUBottleneck", patience="20", threshold="80"), busy, final=True).status is S.NO_ISSUES_FOUND
    fed = Evidence(samples=tuple(sample(i, cpu=99.0, gpu=95.0) for i in range(40)), at=T0)  # the GPU keeps up
    assert verdict(rule("CPUBottleneck", patience="20"), fed, final=True).status is S.NO_ISSUES_FOUND


def test_gpu_rules_on_an_idle_gpu_a_growing_memory_and_on_a_host_without_gpus() -> None:
    idle = Evidence(samples=tuple(sample(i, cpu=50.0, gpu=3.0) for i in range(30)), at=T0)
    low = verdict(rule("LowGPUUtilization", patience="10", window="20"), idle)
    assert low.status is S.ISSUES_FOUND and "algo-1 GPU 0 is underused" in (low.status_details or "")
    growing = Evidence(samples=tuple(sample(i, cpu=50.0, gpu=90.0, memory=i * 8.0) for i in range(12)), at=T0)
    assert verdict(rule("GPUMemoryIncrease", patience="5", window="3"), growing).status is S.ISSUES_FOUND
    cpu_only = Evidence(samples=tuple(sample(i, cpu=50.0) for i in range(30)), at=T0)
    ended = verdict(rule("LowGPUUtilization", patience="10"), cpu_only, final=True)
    assert ended.status is S.NO_ISSUES_FOUND
    assert ended.status_details == "no GPU was sampled: the job's instances have none"


def test_max_initialization_time_and_the_profiler_report_that_runs_every_profiler_rule() -> None:
    slow = Evidence(training_started=T0, metrics=loss([1.0])[:0], at=T0 + timedelta(minutes=3))
    assert verdict(rule("MaxInitializationTime", threshold="2"), slow).status is S.ISSUES_FOUND
    assert verdict(rule("MaxInitializationTime", threshold="5"), slow).status is S.IN_PROGRESS
    blind = slow.model_copy(update={"scrapes_metrics": False})  # no metric definitions: no step is ever seen
    assert verdict(rule("MaxInitializationTime", threshold="2"), blind, final=True).status is S.NO_ISSUES_FOUND
    busy = Evidence(samples=tuple(sample(i, cpu=99.0) for i in range(30)), training_started=T0, at=T0)
    report = verdict(rule("ProfilerReport", CPUBottleneck_patience="10"), busy)
    assert report.status is S.ISSUES_FOUND and (report.status_details or "").startswith("CPUBottleneck: CPU above")
    assert verdict(rule("ProfilerReport"), busy, final=True).status is S.NO_ISSUES_FOUND  # patience 1000 not reached


def test_issues_found_stays_and_kinds_are_told_apart() -> None:
    plateau = Evidence(metrics=loss([0.5] * 30), at=T0)
    fired = verdict(rule("LossNotDecreasing"), plateau)
    c = RuleConfiguration.model_validate(rule("LossNotDecreasing"))
    later = debugger.evaluate(c, fired, Evidence(metrics=loss([1 / (i + 1) for i in range(30)]), at=T0), final=True)
    assert later is fired
    assert debugger.kind_of("Overfit") is RuleKind.DEBUG and debugger.kind_of("IOBottleneck") is RuleKind.PROFILER
