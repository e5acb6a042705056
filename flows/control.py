"""The control plane's verbs: `dockyard jobs ...`, `dockyard search`, `dockyard models list`.

Jobs are read from their records under DOCKYARD_HOME (live and finished
alike); search and models read the MLflow catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dockyard.charts import metric_digest
from dockyard.errors import DockyardError, JobSpecError
from dockyard.record import MetricValue
from dockyard.status import is_final
from infra import records

FOLLOW_POLL_SECONDS = 0.5
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_verbs(sub: Any) -> None:
    """The jobs, search and models sub-commands, on `dockyard`'s parser."""
    jobs = sub.add_parser("jobs", help="list, describe, stop and watch training jobs")
    verbs = jobs.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="training jobs under DOCKYARD_HOME, newest first")
    listing.add_argument("--status", help="Completed, Failed, Stopped, InProgress or Stopping")
    listing.add_argument("--name-contains", help="only names containing this text")
    listing.add_argument("--since", help="created at or after: an ISO time or an age such as 2h, 3d")
    listing.add_argument("--until", help="created before: an ISO time or an age such as 30m")
    listing.add_argument("--max-results", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    describe = verbs.add_parser("describe", help="the DescribeTrainingJob record")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true", help="the whole record as JSON")
    verbs.add_parser("stop", help="stop a running job gracefully (artifacts are uploaded)").add_argument("name")
    logs = verbs.add_parser("logs", help="the job's log")
    logs.add_argument("name")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    metrics = verbs.add_parser("metrics", help="a table of the scraped metric series")
    metrics.add_argument("name")
    metrics.add_argument("--plot", nargs="?", const="", metavar="PNG", help="also draw the curves (NAME-metrics.png)")
    search = sub.add_parser("search", help="find jobs in the MLflow catalog by metrics, params and tags")
    search.add_argument(
        "query", nargs="?", default="", help="e.g. \"metrics.validation:auc > 0.95 and params.eta < '0.3'\""
    )
    search.add_argument("--order-by", action="append", default=[], help="e.g. 'metrics.validation:auc DESC'")
    search.add_argument("--max-results", type=int, default=50)
    search.add_argument("--tuning-jobs", action="store_true", help="search tuning jobs instead of training jobs")
    search.add_argument("--json", action="store_true")
    models = sub.add_parser("models", help="the model registry")
    models.add_subparsers(dest="verb", required=True).add_parser(
        "list", help="every registered model version"
    ).add_argument("--json", action="store_true")


def when(text: str | None, now: datetime) -> datetime | None:
    """An ISO time, or an age (`90s`, `30m`, `2h`, `3d`) before now.

    Raises: JobSpecError when it is neither.
    """
    if not text:
        return None
    age = _RELATIVE.match(text.strip())
    if age:
        return now - timedelta(**{_UNITS[age[2]]: int(age[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise JobSpecError(f"'{text}': not a time — give an ISO time (2026-11-28T09:00) or an age (2h, 3d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def list_jobs(home: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    now = records.now()
    since, until = when(args.since, now), when(args.until, now)
    rows = []
    for name in records.job_names(home):
        if args.name_contains and args.name_contains not in name:
            continue
        row = records.summary(home, name)
        created = datetime.fromisoformat(row["CreationTime"])
        if (since and created < since) or (until and created >= until):
            continue
        if args.status and row["TrainingJobStatus"].lower() != args.status.lower():
            continue
        rows.append(row)
    rows.sort(key=lambda r: r["CreationTime"], reverse=True)
    return rows[: args.max_results]


def follow_log(home: str, name: str) -> None:
    """Print the log, then what is appended, until the job reaches a final status."""
    path = records.job_dir(home, name) / records.LOG_FILE
    offset = 0
    while True:
        final = is_final(records.load(home, name).status.secondary)
        if path.exists():
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        if final:
            return
        time.sleep(FOLLOW_POLL_SECONDS)


def metrics_table(values: list[MetricValue]) -> str:
    """One line per metric and host: how many values, the last, the lowest and the highest."""
    rows = metric_digest(values)
    lines = [f"{'metric':<32} {'host':<8} {'count':>6} {'last':>12} {'min':>12} {'max':>12}"]
    lines += [
        f"{r['metric']:<32} {r['host']:<8} {r['count']:>6} {r['last']:>12.6g} {r['min']:>12.6g} {r['max']:>12.6g}"
        for r in rows
    ]
    return "\n".join(lines) if rows else "no metrics recorded (does the job have metric_definitions?)"


def plot_metrics(values: list[MetricValue], title: str, path: Path) -> None:
    """A PNG of every metric's curve (one panel per metric, a line per host) against seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({v.metric_name for v in values})
    start = min(v.timestamp for v in values)
    figure, axes = plt.subplots(len(names), 1, figsize=(8, 2.6 * len(names)), squeeze=False, sharex=True)
    for axis, name in zip(axes[:, 0], names, strict=True):
        for host in sorted({v.host for v in values if v.metric_name == name}):
            points = [v for v in values if v.metric_name == name and v.host == host]
            axis.plot([(p.timestamp - start).total_seconds() for p in points], [p.value for p in points], label=host)
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("seconds since the first value")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def jobs(args: argparse.Namespace, home: str) -> int:
    from dockyard.record import describe
    from flows.cli import summary

    if args.verb == "list":
        rows = list_jobs(home, args)
        if args.json:
            print(json.dumps(rows, indent=2))
        for r in [] if args.json else rows:
            print(
                f"{r['TrainingJobName']:<63} {r['TrainingJobStatus']:<11} {r.get('SecondaryStatus', '-'):<22}"
                f" {r['CreationTime'][:19].replace('T', ' ')}"
            )
        return 0
    record = records.load(home, args.name)
    if args.verb == "describe":
        print(json.dumps(describe(record), indent=2) if args.json else summary(describe(record)))
    elif args.verb == "metrics":
        values = records.read_metrics(home, args.name)
        print(metrics_table(values))
        if args.plot is not None and values:
            path = Path(args.plot or f"{args.name}-metrics.png")
            plot_metrics(values, f"{args.name} ({record.status.primary.value})", path)
            print(f"chart: {path}")
    elif args.verb == "logs":
        if args.follow:
            follow_log(home, args.name)
        else:
            print((records.job_dir(home, args.name) / records.LOG_FILE).read_text(), end="")
    elif args.verb == "stop":
        if record.status.primary.value != "InProgress":
            raise DockyardError(f"{args.name} is {record.status.primary.value}; there is nothing to stop")
        records.request_stop(home, args.name, f"stop requested by {os.environ.get('USER', 'a user')}")
        print(f"asked {args.name} to stop; it uploads its artifacts and ends Stopped", file=sys.stderr)
    return 0


def search(args: argparse.Namespace, home: str) -> int:
    from dockyard.search import Clause, order_clause, parse_query
    from infra import catalog

    clauses = parse_query(args.query)
    kind = "tuning-job" if args.tuning_jobs else "training-job"
    pushed = [c for c in clauses if c.pushed_down()] + [Clause("tags", catalog.KIND_TAG, "=", f"'{kind}'")]
    checked_here = [c for c in clauses if not c.pushed_down()]

    def keep(run: Any) -> bool:
        data = {"params": run.data.params, "tags": run.data.tags}
        return all(c.matches(data[c.kind].get(c.key)) for c in checked_here)

    found = catalog.search(
        catalog.tracking_uri(home, dict(os.environ)),
        " and ".join(c.mlflow() for c in pushed),
        [order_clause(o) for o in args.order_by],
        args.max_results,
        keep if checked_here else None,
    )
    rows = [
        {
            "name": run.data.tags.get(catalog.JOB_TAG, run.info.run_name),
            "status": run.data.tags.get("dockyard.status", run.info.status),
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "metrics": run.data.metrics,
            "params": run.data.params,
        }
        for run in found
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    shown = sorted(
        {c.key for c in clauses if c.kind == "metrics"} | {o.split()[0].split(".", 1)[-1] for o in args.order_by}
    )
    for row in rows:
        metrics = shown or sorted(row["metrics"])
        values = "  ".join(f"{m}={row['metrics'][m]:.6g}" for m in metrics if m in row["metrics"])
        print(f"{row['name']:<63} {row['status']:<10} {values}")
    if not rows:
        print("no jobs match", file=sys.stderr)
    return 0


def models(args: argparse.Namespace, home: str) -> int:
    from infra import catalog

    versions = catalog.model_versions(catalog.tracking_uri(home, dict(os.environ)))
    rows = [
        {
            "model": v.name,
            "version": int(v.version),
            "training_job": v.tags.get(catalog.JOB_TAG),
            "source": v.source,
            "run_id": v.run_id,
            "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(),
            "metrics": {k.removeprefix("metric."): float(x) for k, x in v.tags.items() if k.startswith("metric.")},
        }
        for v in versions
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    for r in [] if args.json else rows:
        metrics = "  ".join(f"{k}={x:.6g}" for k, x in sorted(r["metrics"].items()))
        print(f"{r['model']:<40} v{r['version']:<4} {r['training_job'] or '-':<50} {metrics}")
    if not rows:
        print("no registered models yet: name model_package_group_name in a job spec", file=sys.stderr)
    return 0


def control(args: argparse.Namespace, home: str) -> int:
    """Run one control-plane command; exit 2 for a bad query, 1 for anything else that went wrong."""
    try:
        return {"jobs": jobs, "search": search, "models": models}[args.command](args, home)
    except JobSpecError as exc:
        for problem in exc.problems:
            print(f"dockyard: {problem}", file=sys.stderr)
        return 2
    except DockyardError as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 1
