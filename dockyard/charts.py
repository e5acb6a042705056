"""Text charts and metric digests, for terminals and Prefect's markdown artifacts."""

from __future__ import annotations

import itertools
from typing import Any

from uniplot import plot_to_string

from dockyard.record import MetricValue

WIDTH, HEIGHT = 60, 12


def metric_digest(values: list[MetricValue]) -> list[dict[str, Any]]:
    """One row per metric and host: how many values, the last, the lowest and the highest."""
    series: dict[tuple[str, str], list[float]] = {}
    for v in values:
        series.setdefault((v.metric_name, v.host), []).append(v.value)
    return [
        {"metric": name, "host": host, "count": len(points), "last": points[-1], "min": min(points), "max": max(points)}
        for (name, host), points in sorted(series.items())
    ]


def curves(values: list[MetricValue]) -> str:
    """Each metric's values against their step, one chart per metric (algo-1's series)."""
    charts = []
    for name in sorted({v.metric_name for v in values}):
        ys = [v.value for v in values if v.metric_name == name and v.host == "algo-1"]
        if len(ys) > 1:
            charts.append(plot_to_string(ys, title=name, color=False, width=WIDTH, height=HEIGHT))
    return "\n\n".join(charts)


def objective_over_trials(objectives: list[float | None], metric: str, maximize: bool) -> str:
    """Each trial's objective, in the order trials ended, and the best so far."""
    points = [(i + 1, y) for i, y in enumerate(objectives) if y is not None]
    if not points:
        return "(no trial reported the objective)"
    xs, ys = [float(x) for x, _ in points], [float(y) for _, y in points]
    best = list(itertools.accumulate(ys, max if maximize else min))
    return plot_to_string(
        [ys, best],
        [xs, xs],
        title=f"{metric} by trial",
        legend_labels=["trial", "best so far"],
        lines=[False, True],
        color=False,
        width=WIDTH,
        height=HEIGHT,
    )
