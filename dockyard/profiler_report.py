"""A job's profiler report: one standalone HTML page, in the spirit of SageMaker
Debugger's ProfilerReport.

Pure: `render` returns the page and the caller writes it. The plots are inline
SVG and the style is inline, so the file opens anywhere, offline, as it is.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from dockyard import debugger, profiling
from dockyard.profiling import SystemSample
from dockyard.record import JobRecord, MetricValue, RuleEvaluation

MAX_POINTS = 2000  # per line: keeps the page small however long the job ran
MIB = 2**20
STATUS_COLOURS = {"IssuesFound": "#c62828", "NoIssuesFound": "#2e7d32", "Error": "#ef6c00", "InProgress": "#757575"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1em 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
.status { font-weight: bold; }
"""


@dataclass(frozen=True)
class Line:
    """One line of a plot; `thin` for the many per-core lines, `steps` for metrics."""

    label: str | None
    xs: list[float]
    ys: list[float]
    thin: bool = False
    steps: bool = False


def _line(label: str | None, points: Sequence[tuple[float, float]], thin: bool = False) -> Line:
    """A line through (x, y) points: for series some samples lack (a core, a GPU, I/O wait)."""
    return Line(label, [x for x, _ in points], [y for _, y in points], thin=thin)


def _evenly(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """At most MAX_POINTS points, picked evenly, first and last kept."""
    n = len(xs)
    if n <= MAX_POINTS:
        return xs, ys
    picked = [round(i * (n - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)]
    return [xs[i] for i in picked], [ys[i] for i in picked]


def _svg(lines: Sequence[Line], ylabel: str, xlabel: str) -> str:
    """The lines as one small SVG plot. No user text goes into the figure (matplotlib would
    read `$` as mathtext); captions carry it, escaped."""
    # Figure, not pyplot: pyplot's global state is not safe across threads (jobs end in parallel in
    # one process); imported here, not at the top: it is slow and most callers never plot.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.6))
    axis = fig.subplots()
    for line in lines:
        xs, ys = _evenly(line.xs, line.ys)
        axis.plot(
            xs,
            ys,
            label=line.label,
            linewidth=0.5 if line.thin else 1.4,
            alpha=0.5 if line.thin else 1.0,
            drawstyle="steps-post" if line.steps else "default",
        )
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    if any(line.label for line in lines):
        axis.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue and doctype: the SVG sits inside HTML


def _figure(caption: str, lines: Sequence[Line], ylabel: str, xlabel: str = "seconds since the first sample") -> str:
    return f"<figure>{_svg(lines, ylabel, xlabel)}<figcaption>{escape(caption)}</figcaption></figure>"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "—"


def _facts(record: JobRecord, samples: list[SystemSample]) -> str:
    """The job at a glance: status, instances, sampling."""
    status, resources = record.status, record.spec.resource_config
    secondary = status.secondary.value if status.secondary else "—"
    counts = {h: sum(s.host == h for s in samples) for h in sorted({s.host for s in samples})}
    facts = [
        ("Status", f"{status.primary.value} / {secondary}"),
        ("Instances", f"{resources.instance_type} × {resources.instance_count}"),
        ("Profiling interval", f"{record.spec.profiling_interval_seconds:g} s"),
        ("Training start", _when(record.training_start_time)),
        ("Training end", _when(record.training_end_time)),
        ("Samples per host", ", ".join(f"{h}: {n}" for h, n in counts.items()) or "none"),
    ]
    if record.failure_reason:
        facts.append(("Failure reason", record.failure_reason))
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f"<table><tbody>{cells}</tbody></table>"


def _rule_row(evaluation: RuleEvaluation, rules: dict[str, str]) -> list[str]:
    status = evaluation.status.value
    colour = STATUS_COLOURS.get(status, "#222")
    return [
        escape(evaluation.rule_configuration_name),
        escape(rules.get(evaluation.rule_configuration_name, "—")),
        escape(evaluation.kind.value),
        f'<span class="status" style="color: {colour}">{escape(status)}</span>',
        escape(evaluation.status_details or ""),
        escape(_when(evaluation.last_modified_time)),
    ]


def _rules(record: JobRecord) -> str:
    """One row per configured rule's evaluation, its status colour-coded."""
    if not record.rule_evaluations:
        return "<h2>Rules</h2><p>No rules were configured.</p>"
    configs = [*record.spec.debug_rule_configurations, *record.spec.profiler_rule_configurations]
    rules = {c.rule_configuration_name: debugger.rule_name(c) for c in configs}
    header = ["Configuration", "Rule", "Kind", "Status", "Details", "Last modified"]
    return "<h2>Rules</h2>" + _table(header, (_rule_row(e, rules) for e in record.rule_evaluations))


def _summary(samples: list[SystemSample]) -> str:
    """`profiling.summary`'s rows as a table; GPU columns appear when any host has them."""
    rows = profiling.summary(samples)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return _table(list(columns), ([escape(str(r.get(c, "—"))) for c in columns] for r in rows))


def _host_plots(host: str, mine: list[SystemSample], start: datetime) -> list[str]:
    """One host's system plots: CPU, memory, network, disk, I/O wait, and its GPUs if any."""
    xs = [(s.timestamp - start).total_seconds() for s in mine]

    def line(label: str, value: Callable[[SystemSample], float]) -> Line:
        return Line(label, xs, [value(s) for s in mine])

    per_core = []
    for core in range(max(len(s.cpu_per_core) for s in mine)):
        seen = [(x, s.cpu_per_core[core]) for x, s in zip(xs, mine, strict=True) if len(s.cpu_per_core) > core]
        per_core.append(_line(None, seen, thin=True))
    figures = [
        _figure(f"{host}: CPU utilization", [*per_core, line("total", lambda s: s.cpu_percent)], "%"),
        _figure(
            f"{host}: memory",
            [line("used", lambda s: s.memory_bytes / MIB), line("limit", lambda s: s.memory_limit_bytes / MIB)],
            "MiB",
        ),
        _figure(
            f"{host}: network",
            [
                line("rx", lambda s: s.network_rx_bytes_per_s / MIB),
                line("tx", lambda s: s.network_tx_bytes_per_s / MIB),
            ],
            "MiB/s",
        ),
        _figure(
            f"{host}: disk",
            [
                line("read", lambda s: s.disk_read_bytes_per_s / MIB),
                line("write", lambda s: s.disk_write_bytes_per_s / MIB),
            ],
            "MiB/s",
        ),
    ]
    waits = [(x, s.iowait_percent) for x, s in zip(xs, mine, strict=True) if s.iowait_percent is not None]
    if waits:
        figures.append(_figure(f"{host}: I/O wait", [_line(None, waits)], "%"))
    return figures + _gpu_plots(host, mine, xs)


def _gpu_plots(host: str, mine: list[SystemSample], xs: list[float]) -> list[str]:
    """Utilization and memory used of each of the host's GPUs; none when it has no GPU."""
    devices = sorted({g.index for s in mine for g in s.gpus})
    if not devices:
        return []
    util, memory = [], []
    for index in devices:
        seen = [(x, g) for x, s in zip(xs, mine, strict=True) for g in s.gpus if g.index == index]
        util.append(_line(f"gpu {index}", [(x, g.utilization_percent) for x, g in seen]))
        memory.append(_line(f"gpu {index}", [(x, g.memory_used_bytes / MIB) for x, g in seen]))
    return [_figure(f"{host}: GPU utilization", util, "%"), _figure(f"{host}: GPU memory used", memory, "MiB")]


def _system(record: JobRecord, samples: list[SystemSample]) -> str:
    """The summary table, then each host's plots against the job's first sample."""
    if not samples:
        why = (
            "no sample was taken while the instances ran"
            if record.spec.profiling
            else "profiler_config is absent or sets disable_profiler, and no profiler rule asks for samples"
        )
        return f"<h2>System metrics</h2><p>The profiler sampled nothing: {escape(why)}.</p>"
    start = min(s.timestamp for s in samples)
    parts = ["<h2>System metrics</h2>", _summary(samples)]
    for host in sorted({s.host for s in samples}):
        mine = sorted((s for s in samples if s.host == host), key=lambda s: s.timestamp)
        parts += [f"<h3>{escape(host)}</h3>", *_host_plots(host, mine, start)]
    return "".join(parts)


def _metric_plot(name: str, values: list[MetricValue]) -> str:
    """One metric, a step line per host against the value's index; last/min/max in the caption."""
    lines, stats = [], []
    for host in sorted({v.host for v in values}):
        ys = [v.value for v in sorted((v for v in values if v.host == host), key=lambda v: v.timestamp)]
        lines.append(Line(host, [float(i) for i in range(len(ys))], ys, steps=True))
        stats.append(f"{host}: last {ys[-1]:.6g}, min {min(ys):.6g}, max {max(ys):.6g}")
    return _figure(f"{name} — {'; '.join(stats)}", lines, "value", xlabel="value number")


def _metrics(metrics: list[MetricValue]) -> str:
    if not metrics:
        return "<h2>Metrics</h2><p>No metrics were recorded (does the job have metric_definitions?).</p>"
    names = sorted({m.metric_name for m in metrics})
    return "<h2>Metrics</h2>" + "".join(_metric_plot(n, [m for m in metrics if m.metric_name == n]) for n in names)


def render(record: JobRecord, samples: list[SystemSample], metrics: list[MetricValue]) -> str:
    """The job's profiler report as one self-contained HTML document: facts, rules,
    system metrics and scraped metrics. Every piece of user text is escaped."""
    title = escape(f"Profiler report: {record.name}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{STYLE}</style></head><body>"
        f"<h1>{title}</h1>{_facts(record, samples)}{_rules(record)}{_system(record, samples)}{_metrics(metrics)}"
        "</body></html>\n"
    )
