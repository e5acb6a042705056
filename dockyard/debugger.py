"""SageMaker Debugger and Profiler built-in rules, evaluated by dockyard itself.

A rule configuration names its rule in `rule_parameters.rule_to_invoke`
(or, in a hand-written spec, by its configuration name) and sets the rule's
parameters as strings, as SageMaker's SDK sends them. This module holds the
catalog (each rule's parameters, defaults and ranges, as SageMaker documents
them), checks configurations before anything is created, reads the actions a
rule takes when it fires, and turns a rule's check (dockyard.rule_checks)
into the evaluation status DescribeTrainingJob reports.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dockyard.algorithms import suggest
from dockyard.errors import FieldProblem
from dockyard.record import RuleEvaluation, RuleEvaluationStatus, RuleKind
from dockyard.rule_checks import DEBUGGER_CHECKS, PROFILER_CHECKS, Evidence, Params, Unanswerable, profiler_report
from dockyard.spec import RuleConfiguration, TrainingJobSpec


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    kind: type = float  # float, int, str or bool
    low: float | None = None
    high: float | None = None


def _percent(name: str, default: float) -> Param:
    return Param(name, default, float, 0, 100)


def _positive(name: str, default: float, kind: type = float) -> Param:
    return Param(name, default, kind, 1 if kind is int else 1e-9, None)


SCAN = Param("scan_interval_us", 60_000_000, int, 1)  # SageMaker's rule container's pace; here every evaluation
PATIENCE = _positive("patience", 1000, int)

PROFILER_PARAMS: dict[str, tuple[Param, ...]] = {
    "LowGPUUtilization": (
        _percent("threshold_p95", 70), _percent("threshold_p5", 10), _positive("window", 500, int), PATIENCE, SCAN,
    ),
    "CPUBottleneck": (
        _percent("threshold", 50), _percent("gpu_threshold", 10), _percent("cpu_threshold", 90), PATIENCE, SCAN,
    ),
    "IOBottleneck": (
        _percent("threshold", 50), _percent("gpu_threshold", 10), _percent("io_threshold", 50), PATIENCE, SCAN,
    ),
    "GPUMemoryIncrease": (_positive("increase", 5), PATIENCE, _positive("window", 10, int), SCAN),
    "MaxInitializationTime": (_positive("threshold", 20), SCAN),
    "OverallSystemUsage": (SCAN,),
}  # fmt: skip
# Rules ProfilerReport runs in SageMaker that need framework traces dockyard does not record:
# their `<Rule>_<param>` settings are accepted, and they report nothing.
TRACE_ONLY = ("BatchSize", "Dataloader", "StepOutlier", "LoadBalancing")

_METRICS = (Param("tensor_regex", None, str), Param("collection_names", None, str), Param("mode", None, str))
_PAIR = (Param("training_metric", None, str), Param("validation_metric", None, str))
DEBUGGER_PARAMS: dict[str, tuple[Param, ...]] = {
    "LossNotDecreasing": (
        Param("metric_names", None, str), _positive("num_steps", 10, int), Param("diff_percent", 0.0, float, 0, 100),
        Param("increase_threshold_percent", None, float, 0, 100), Param("use_losses_collection", True, bool), *_METRICS,
    ),
    "Overfit": (
        *_PAIR, Param("start_step", 0, int, 0), _positive("patience", 1, int), Param("ratio_threshold", 0.1, float, 0),
        *_METRICS,
    ),
    "Overtraining": (
        *_PAIR, _positive("patience_train", 5, int), _positive("patience_validation", 10, int),
        Param("delta", 0.1, float, 0), *_METRICS,
    ),
}  # fmt: skip
ALWAYS = {"rule_to_invoke", "action_json"}  # every rule's; `other_trial_N` too (Debugger's cross-job rules)

ACTIONS = {"stoptraining": "training_job_prefix", "email": "endpoint", "sms": "endpoint"}


@dataclass(frozen=True)
class Action:
    name: str  # stoptraining, email or sms, as smdebug spells them
    target: str | None  # the job prefix to stop, or whom to tell


def kind_of(rule: str) -> RuleKind | None:
    if rule in PROFILER_PARAMS or rule == "ProfilerReport":
        return RuleKind.PROFILER
    return RuleKind.DEBUG if rule in DEBUGGER_PARAMS else None


def rule_name(config: RuleConfiguration) -> str:
    """The built-in rule a configuration invokes."""
    return config.rule_parameters.get("rule_to_invoke") or config.rule_configuration_name


def _params_of(rule: str) -> dict[str, Param]:
    """The rule's parameters by name; ProfilerReport's are `<rule>_<param>` in lower case (it takes
    them in any case, as smdebug_rulesconfig does)."""
    if rule == "ProfilerReport":
        known = {f"{r}_{p.name}".lower(): p for r, params in PROFILER_PARAMS.items() for p in params}
        return known | {"scan_interval_us": SCAN}
    return {p.name: p for p in {**PROFILER_PARAMS, **DEBUGGER_PARAMS}[rule]}


def _key(rule: str, key: str) -> str:
    return key.lower() if rule == "ProfilerReport" else key


def _value(p: Param, text: str) -> Any:
    """A parameter's value from its string; raises ValueError saying what is wrong."""
    if text in ("None", "none", ""):
        return p.default
    if p.kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"'{text}' is not true or false")
        return text.lower() == "true"
    if p.kind is str:
        return text
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"'{text}' is not a finite number")
    if p.kind is int and number != int(number):
        raise ValueError(f"'{text}' is not a whole number")
    value = int(number) if p.kind is int else number
    if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
        if p.high is not None:
            bounds = f"from {p.low:g} to {p.high:g}"
        else:
            bounds = "above 0" if p.low == 1e-9 else f"at least {p.low:g}"
        raise ValueError(f"{value:g} is out of range: use a value {bounds}")
    return value


def parameters(config: RuleConfiguration) -> Params:
    """The rule's parameters, defaults filled in; ProfilerReport's are per sub-rule under "rules".

    Raises:
        ValueError: a parameter is unknown or its value is wrong (`problems` says which, as a spec error).
    """
    rule = rule_name(config)
    known = _params_of(rule)
    if rule == "ProfilerReport":
        out: Params = {"rules": {r: {p.name: p.default for p in ps} for r, ps in PROFILER_PARAMS.items()}}
        by_lower = {r.lower(): r for r in PROFILER_PARAMS}
        for key, text in config.rule_parameters.items():
            if key.lower() in known and key.lower() != "scan_interval_us":
                sub, name = key.split("_", 1)
                out["rules"][by_lower[sub.lower()]][name] = _value(known[key.lower()], text)
        return out
    out = {p.name: p.default for p in known.values()}
    for key, text in config.rule_parameters.items():
        if key in known:
            out[key] = _value(known[key], text)
    return out


def actions(config: RuleConfiguration) -> list[Action]:
    """What the rule does when it fires, from `action_json` as the SageMaker SDK writes it
    (a dict or a list of dicts, quotes possibly backslash-escaped, read in lower case as smdebug does).

    Raises:
        ValueError: the text is no such JSON, or names an action SageMaker does not know.
    """
    text = config.rule_parameters.get("action_json")
    if not text:
        return []
    try:
        parsed = json.loads(text.lower().replace('\\"', '"'))
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg})") from None
    found = []
    for entry in parsed if isinstance(parsed, list) else [parsed]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in ACTIONS:
            raise ValueError(f"names an unknown action {name!r}: use stoptraining, email or sms")
        target = entry.get(ACTIONS[name])
        if target is not None and not isinstance(target, str):
            raise ValueError(f"{name}'s {ACTIONS[name]} must be a string — got {target!r}")
        found.append(Action(name, target))
    return found


def _check(config: RuleConfiguration, where: str, kind: RuleKind) -> list[FieldProblem]:
    rule = rule_name(config)
    found = kind_of(rule)
    other = "profiler_rule_configurations" if kind is RuleKind.DEBUG else "debug_rule_configurations"
    if found is None:
        every = [*PROFILER_PARAMS, "ProfilerReport", *DEBUGGER_PARAMS, *TRACE_ONLY]
        hint = suggest(rule, every) or f"use one of {', '.join(sorted(set(every) - set(TRACE_ONLY)))}"
        if rule in TRACE_ONLY:
            hint = "it needs framework traces, which dockyard does not record; ProfilerReport covers the rest"
        key = "rule_to_invoke" if "rule_to_invoke" in config.rule_parameters else "rule_configuration_name"
        at = (
            f"{where}.rule_parameters.rule_to_invoke" if key == "rule_to_invoke" else f"{where}.rule_configuration_name"
        )
        return [FieldProblem(at, f"'{rule}' is not a built-in rule dockyard evaluates", hint)]
    if found is not kind:
        return [FieldProblem(where, f"{rule} is a {found.value} rule", f"move it to {other}")]
    problems = []
    known = _params_of(rule)
    for key, text in config.rule_parameters.items():
        at = f"{where}.rule_parameters.{key}"
        if _key(rule, key) in known:
            try:
                _value(known[_key(rule, key)], text)
                if key == "tensor_regex":
                    re.compile(text)
            except (ValueError, re.error) as exc:
                problems.append(FieldProblem(at, str(exc) if isinstance(exc, ValueError) else f"is no regex ({exc})"))
        elif key not in ALWAYS and not re.fullmatch(r"other_trial_\d+", key):
            prefix = key.split("_", 1)[0].lower()
            if rule == "ProfilerReport" and prefix in {r.lower() for r in TRACE_ONLY}:
                continue
            hint = suggest(key, list(known)) or f"{rule} takes {', '.join(known) or 'no parameters'}"
            problems.append(FieldProblem(at, f"{rule} has no parameter '{key}'", hint))
    try:
        actions(config)
    except ValueError as exc:
        problems.append(FieldProblem(f"{where}.rule_parameters.action_json", str(exc)))
    return problems


def problems(spec: TrainingJobSpec) -> list[FieldProblem]:
    """Everything wrong with the job's rule configurations, one problem per field."""
    found: list[FieldProblem] = []
    names: list[str] = []
    for field, kind in (
        ("debug_rule_configurations", RuleKind.DEBUG),
        ("profiler_rule_configurations", RuleKind.PROFILER),
    ):
        for i, config in enumerate(getattr(spec, field)):
            where = f"{field}[{i}]"
            if config.rule_configuration_name in names:
                found.append(
                    FieldProblem(
                        f"{where}.rule_configuration_name",
                        f"'{config.rule_configuration_name}' is used twice",
                        "give each rule configuration its own name",
                    )
                )
            names.append(config.rule_configuration_name)
            found += _check(config, where, kind)
    profiler = spec.profiler_config
    if spec.profiler_rule_configurations and profiler is not None and profiler.disable_profiler:
        found.append(
            FieldProblem(
                "profiler_config.disable_profiler",
                "profiler rules need the system metrics it turns off",
                "remove disable_profiler, or the profiler_rule_configurations",
            )
        )
    return found


def configured(spec: TrainingJobSpec) -> list[tuple[RuleKind, RuleConfiguration]]:
    return [(RuleKind.DEBUG, c) for c in spec.debug_rule_configurations] + [
        (RuleKind.PROFILER, c) for c in spec.profiler_rule_configurations
    ]


def starting(spec: TrainingJobSpec, at: datetime) -> tuple[RuleEvaluation, ...]:
    """Every configured rule, InProgress: what a new job's record holds."""
    return tuple(
        RuleEvaluation(
            rule_configuration_name=c.rule_configuration_name,
            kind=kind,
            status=RuleEvaluationStatus.IN_PROGRESS,
            last_modified_time=at,
        )
        for kind, c in configured(spec)
    )


def _check_of(rule: str) -> Callable[[Params, Evidence], str | None]:
    if rule == "ProfilerReport":
        return profiler_report
    return {**PROFILER_CHECKS, **DEBUGGER_CHECKS}[rule]


def evaluate(config: RuleConfiguration, before: RuleEvaluation, ev: Evidence, final: bool) -> RuleEvaluation:
    """The rule's status now. IssuesFound stays; at the end (`final`) a rule that found nothing
    says NoIssuesFound, or Error when the job never gave it anything to look at."""
    if before.status is not RuleEvaluationStatus.IN_PROGRESS:
        return before
    status, details = RuleEvaluationStatus.IN_PROGRESS, before.status_details
    try:
        issue = _check_of(rule_name(config))(parameters(config), ev)
        if issue:
            status, details = RuleEvaluationStatus.ISSUES_FOUND, f"{issue} (seen at {ev.at:%Y-%m-%d %H:%M:%S} UTC)"
        elif final:
            status, details = RuleEvaluationStatus.NO_ISSUES_FOUND, None
    except Unanswerable as missing:
        details = str(missing)
        if final:
            # A profiler rule with no GPU to watch found nothing wrong; a debugger rule without its metric
            # could not run.
            gpu_less = kind_of(rule_name(config)) is RuleKind.PROFILER
            status = RuleEvaluationStatus.NO_ISSUES_FOUND if gpu_less else RuleEvaluationStatus.ERROR
    if (status, details) == (before.status, before.status_details):
        return before
    return before.model_copy(update={"status": status, "status_details": details, "last_modified_time": ev.at})
