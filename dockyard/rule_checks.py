"""What each built-in Debugger and Profiler rule looks for, as pure functions
over a snapshot of the job (its system samples and scraped metrics).

A check returns what it found wrong, in words, or None; it raises
`Unanswerable` when the job gives it nothing to look at (yet). The logic
follows SageMaker's rules (smdebug's profiler rules; the Debugger rules'
documentation), with scraped metrics in place of saved tensors: a metric's
values in the order printed are its steps.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from dockyard.profiling import SystemSample
from dockyard.record import MetricValue

Params = dict[str, Any]


class Unanswerable(Exception):
    """The job has given the rule nothing to look at (yet); the message says what is missing."""


class Evidence(BaseModel):
    """What a rule sees of the job at one moment."""

    model_config = ConfigDict(frozen=True)

    samples: tuple[SystemSample, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    training_started: datetime | None = None
    scrapes_metrics: bool = True  # whether the job has metric definitions at all
    at: datetime


def _by_host(samples: tuple[SystemSample, ...]) -> dict[str, list[SystemSample]]:
    hosts: dict[str, list[SystemSample]] = {}
    for s in samples:
        hosts.setdefault(s.host, []).append(s)
    return hosts


def _gpu_series(ev: Evidence, value: Callable[[Any], float]) -> dict[tuple[str, int], list[float]]:
    series: dict[tuple[str, int], list[float]] = {}
    for s in ev.samples:
        for g in s.gpus:
            series.setdefault((s.host, g.index), []).append(value(g))
    if not series:
        raise Unanswerable("no GPU was sampled: the job's instances have none")
    return series


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _when(s: SystemSample) -> str:
    return s.timestamp.strftime("%H:%M:%S")


def low_gpu_utilization(p: Params, ev: Evidence) -> str | None:
    for (host, gpu), values in sorted(_gpu_series(ev, lambda g: g.utilization_percent).items()):
        if len(values) <= p["patience"]:
            continue
        recent = values[-int(p["window"]) :]
        p95, p5 = _percentile(recent, 95), _percentile(recent, 5)
        if p95 < p["threshold_p95"]:
            return (
                f"{host} GPU {gpu} is underused: its 95th percentile utilization is {p95:.0f}% "
                f"(< {p['threshold_p95']:g}%)"
            )
        if p5 < p["threshold_p5"]:
            return (
                f"{host} GPU {gpu} fluctuates: 95th percentile {p95:.0f}%, 5th percentile {p5:.0f}% "
                f"(< {p['threshold_p5']:g}%)"
            )
    return None


def _busy_while_gpu_idle(p: Params, ev: Evidence, busy: Callable[[SystemSample], bool], what: str) -> str | None:
    """Shared by CPUBottleneck and IOBottleneck: the share of samples where the GPUs idle (or
    there are none) while `busy` holds, once there are more samples than the patience."""
    if not ev.samples:
        raise Unanswerable("no system metrics were sampled")
    if len(ev.samples) <= p["patience"]:
        return None
    bottlenecks = [s for s in ev.samples if (s.gpu_percent or 0.0) < p["gpu_threshold"] and busy(s)]
    share = 100 * len(bottlenecks) / len(ev.samples)
    if share > p["threshold"]:
        first = bottlenecks[0]
        return (
            f"{what} in {share:.0f}% of {len(ev.samples)} samples (> {p['threshold']:g}%), "
            f"GPUs below {p['gpu_threshold']:g}% or none; first at {_when(first)} on {first.host}"
        )
    return None


def cpu_bottleneck(p: Params, ev: Evidence) -> str | None:
    def busy(s: SystemSample) -> bool:
        return max((s.cpu_percent, *s.cpu_per_core)) > p["cpu_threshold"]

    return _busy_while_gpu_idle(p, ev, busy, f"CPU above {p['cpu_threshold']:g}%")


def io_bottleneck(p: Params, ev: Evidence) -> str | None:
    def busy(s: SystemSample) -> bool:
        return (s.iowait_percent or 0.0) > p["io_threshold"]

    return _busy_while_gpu_idle(p, ev, busy, f"I/O wait above {p['io_threshold']:g}%")


def gpu_memory_increase(p: Params, ev: Evidence) -> str | None:
    window = int(p["window"])

    def used(g: Any) -> float:
        return 100 * g.memory_used_bytes / max(g.memory_total_bytes, 1)

    for (host, gpu), values in sorted(_gpu_series(ev, used).items()):
        if len(values) <= max(window + 1, p["patience"]):
            continue
        diff = statistics.fmean(values[-window:]) - statistics.fmean(values[-window - 1 : -1])
        if diff > p["increase"]:
            return f"{host} GPU {gpu}'s memory use rose by {diff:.1f} points (> {p['increase']:g}) in one interval"
    return None


def max_initialization_time(p: Params, ev: Evidence) -> str | None:
    if not ev.scrapes_metrics:
        raise Unanswerable("the job scrapes no metrics, so no step can be seen: add metric_definitions")
    if ev.training_started is None:
        raise Unanswerable("training has not started")
    first = min((m.timestamp for m in ev.metrics), default=None)
    limit = p["threshold"] * 60
    if first is not None:
        waited = (first - ev.training_started).total_seconds()
        return (
            f"the first metric value came {waited / 60:.1f} min into training (> {p['threshold']:g} min)"
            if (waited > limit)
            else None
        )
    waited = (ev.at - ev.training_started).total_seconds()
    if waited > limit:
        return f"no metric value (no step) in the first {waited / 60:.1f} min of training (> {p['threshold']:g} min)"
    return None


def overall_system_usage(p: Params, ev: Evidence) -> str | None:  # noqa: ARG001 - a report, it never fires
    if not ev.samples:
        raise Unanswerable("no system metrics were sampled")
    return None


PROFILER_CHECKS: dict[str, Callable[[Params, Evidence], str | None]] = {
    "LowGPUUtilization": low_gpu_utilization,
    "CPUBottleneck": cpu_bottleneck,
    "IOBottleneck": io_bottleneck,
    "GPUMemoryIncrease": gpu_memory_increase,
    "MaxInitializationTime": max_initialization_time,
    "OverallSystemUsage": overall_system_usage,
}


def profiler_report(p: Params, ev: Evidence) -> str | None:
    """Every profiler rule, each with its `<Rule>_<param>` overrides: what any of them found."""
    found, answered = [], False
    for rule, check in PROFILER_CHECKS.items():
        try:
            issue = check(p["rules"][rule], ev)
            answered = True
        except Unanswerable:
            continue
        if issue:
            found.append(f"{rule}: {issue}")
    if not answered:
        raise Unanswerable("no system metrics were sampled")
    return "; ".join(found) or None


# Debugger rules: on metric series. A series is one metric's values on one host, in order.


def _series(ev: Evidence, name: str) -> dict[str, list[float]]:
    hosts: dict[str, list[float]] = {}
    for m in ev.metrics:
        if m.metric_name == name:
            hosts.setdefault(m.host, []).append(m.value)
    return hosts


def _names(p: Params, ev: Evidence, key: str, guess: Callable[[str], bool], what: str) -> list[str]:
    """The metrics a rule watches: the parameter's (comma-separated); else those `tensor_regex`
    matches, only the loss-like ones while `use_losses_collection` holds (SageMaker's losses
    collection: `.*` must not make accuracy a loss); else a guess among those scraped."""
    seen = sorted({m.metric_name for m in ev.metrics})
    if p.get(key):
        wanted = [n.strip() for n in str(p[key]).split(",") if n.strip()]
    elif p.get("tensor_regex"):
        wanted = [n for n in seen if re.search(str(p["tensor_regex"]), n)]
        wanted = [n for n in wanted if guess(n.lower())] if p.get("use_losses_collection", True) else wanted
    else:
        wanted = [n for n in seen if guess(n.lower())]
    present = [n for n in wanted if n in seen]
    if not present:
        named = ", ".join(wanted) if wanted else f"{what} (none of {seen or 'no metrics'} looks like one)"
        raise Unanswerable(
            f"no values of {named} were scraped: set rule_parameters.{key}, or metric_definitions to scrape it"
        )
    return present


def loss_not_decreasing(p: Params, ev: Evidence) -> str | None:
    steps = int(p["num_steps"])
    for name in _names(p, ev, "metric_names", lambda n: "loss" in n, "a loss metric"):
        for host, values in sorted(_series(ev, name).items()):
            for i in range(steps, len(values), steps):
                before, now = values[i - steps], values[i]
                fell = 100 * (before - now) / abs(before) if before else (before - now) * 100
                if fell <= p["diff_percent"]:
                    return (
                        f"{name} on {host} went from {before:g} to {now:g} over {steps} values "
                        f"(fell {fell:.2f}%, needs > {p['diff_percent']:g}%)"
                    )
    return None


def _pair(p: Params, ev: Evidence) -> tuple[str, str]:
    train = _names(p, ev, "training_metric", lambda n: "train" in n and "loss" in n, "a training loss")[0]
    valid = _names(p, ev, "validation_metric", lambda n: "val" in n and "loss" in n, "a validation loss")[0]
    return train, valid


def overfit(p: Params, ev: Evidence) -> str | None:
    train_name, valid_name = _pair(p, ev)
    train, valid = _series(ev, train_name), _series(ev, valid_name)
    for host in sorted(set(train) & set(valid)):
        run = 0
        for i, (t, v) in enumerate(zip(train[host], valid[host], strict=False)):
            if i < p["start_step"]:
                continue
            ratio = (v - t) / abs(t) if t else 0.0
            run = run + 1 if ratio > p["ratio_threshold"] else 0
            if run >= p["patience"]:
                return (
                    f"{valid_name} ({v:g}) exceeds {train_name} ({t:g}) by {ratio:.0%} on {host} "
                    f"(> {p['ratio_threshold']:g} for {run} value(s))"
                )
    return None


def _stalled(values: list[float], patience: int, delta: float) -> int | None:
    """The index where `values` has gone `patience` values without beating its best by `delta`."""
    best, since = values[0] if values else 0.0, 0
    for i, value in enumerate(values[1:], 1):
        if best - value > delta:
            best, since = value, i
        elif i - since >= patience:
            return i
    return None


def overtraining(p: Params, ev: Evidence) -> str | None:
    for name, patience in zip(_pair(p, ev), (p["patience_train"], p["patience_validation"]), strict=True):
        for host, values in sorted(_series(ev, name).items()):
            at = _stalled(values, int(patience), p["delta"])
            if at is not None:
                return f"{name} on {host} has not improved by {p['delta']:g} in {patience} values (at value {at + 1})"
    return None


DEBUGGER_CHECKS: dict[str, Callable[[Params, Evidence], str | None]] = {
    "LossNotDecreasing": loss_not_decreasing,
    "Overfit": overfit,
    "Overtraining": overtraining,
}
