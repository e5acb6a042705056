"""`dockyard jobs list|describe|stop|logs|metrics|profile`: training jobs from the job store,
running and finished alike."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import webbrowser
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cli.render import summary
from dockyard import profiler_report, profiling
from dockyard.charts import metric_digest
from dockyard.errors import DockyardError, JobSpecError
from dockyard.record import MetricValue, describe, describe_processing
from dockyard.settings import Settings
from dockyard.status import is_final
from infra import job_log
from infra.job_store import JobFilter, JobStore, now, open_store
from tasks.warm_pool import set_keep_alive, sweep

FOLLOW_POLL_SECONDS = 0.5
FOLLOW_WINDOW = 5000  # log positions below the highest seen that `--follow` reads again
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_verbs(sub: Any) -> None:
    """The jobs sub-commands, on `dockyard`'s parser."""
    jobs = sub.add_parser("jobs", help="list, describe, stop and watch training jobs")
    verbs = jobs.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="training (or processing) jobs, newest first")
    listing.add_argument("--kind", choices=("training", "processing"), default="training")
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
    keep = verbs.add_parser("keep-alive", help="set the period of a job's warm pool, from its end (0 ends it now)")
    keep.add_argument("name")
    keep.add_argument("seconds", type=int, help="0 to 3600")
    logs = verbs.add_parser("logs", help="the job's log")
    logs.add_argument("name")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    metrics = verbs.add_parser("metrics", help="a table of the scraped metric series")
    metrics.add_argument("name")
    metrics.add_argument("--plot", nargs="?", const="", metavar="PNG", help="also draw the curves (NAME-metrics.png)")
    profile = verbs.add_parser("profile", help="the profiler report: system metrics, rules and curves, as HTML")
    profile.add_argument("name")
    profile.add_argument("--output", metavar="HTML", help="where to write it (NAME-profiler-report.html)")
    profile.add_argument("--open", action="store_true", help="open it in a web browser")


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


def list_jobs(store: JobStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The jobs `dockyard jobs list` shows, newest first, as ListTrainingJobs' (or
    ListProcessingJobs') summaries."""
    at = now()
    found = store.summaries(
        name_contains=args.name_contains, status=args.status, since=when(args.since, at), until=when(args.until, at),
        limit=args.max_results, kind=args.kind,
    )  # fmt: skip
    if args.kind == "processing":
        return [
            {
                "ProcessingJobName": job.name,
                "ProcessingJobStatus": job.primary.value,
                "CreationTime": job.creation_time.isoformat(),
                "ProcessingEndTime": job.training_end_time.isoformat() if job.training_end_time else None,
            }
            for job in found
        ]
    return [
        {
            "TrainingJobName": job.name,
            "TrainingJobStatus": job.primary.value,
            "SecondaryStatus": job.secondary.value,
            "CreationTime": job.creation_time.isoformat(),
            "TrainingEndTime": job.training_end_time.isoformat() if job.training_end_time else None,
        }
        for job in found
    ]


def keep_alive(store: JobStore, settings: Settings, name: str, seconds: int) -> None:
    """UpdateTrainingJob's KeepAlivePeriodInSeconds from the command line; an ended pool's instances
    leave this machine's disk at once.

    Raises:
        DockyardError: the period is out of range, or the job keeps no warm pool to update.
    """
    set_keep_alive(store, settings, name, seconds)
    sweep(store, settings)
    pool = store.get(name).warm_pool
    shown = pool.shown(now())["Status"] if pool else "none yet (kept when it ends)"
    print(f"{name}: keep_alive_period_in_seconds {seconds}; WarmPoolStatus {shown}")


def follow_log(store: JobStore, settings: Settings, name: str) -> None:
    """Print the log, then what is added, until the job reaches a final status: this machine's
    lines from its log file, every host's container lines from the job store."""
    path = job_log.path(settings.home, name)
    merge = job_log.Merge()
    offset, low, seen = 0, 0, set[int]()
    while True:
        final = is_final(store.get(name).status.secondary)
        chunk = b""
        if path.exists():
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only: the rest comes next time
            offset += len(chunk)
        stored = [(i, line) for i, line in store.log_lines_after(name, low) if i not in seen]
        seen.update(i for i, _ in stored)
        if seen:  # positions a little below the highest are read again: another host's write may commit late
            low = max(low, max(seen) - FOLLOW_WINDOW)
            seen = {i for i in seen if i > low}
        lines = merge.lines(job_log.entries(chunk.decode(errors="replace")), [line for _, line in stored])
        sys.stdout.write("".join(f"{line}\n" for line in lines))
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
    import matplotlib  # here, not at the top: only `--plot` pays for importing it

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


def jobs(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `dockyard jobs` verb."""
    store = open_store(settings)
    if args.verb == "list":
        rows = list_jobs(store, args)
        if args.json:
            print(json.dumps(rows, indent=2))
        kind = "Processing" if args.kind == "processing" else "Training"
        for r in [] if args.json else rows:
            print(
                f"{r[f'{kind}JobName']:<63} {r[f'{kind}JobStatus']:<11} {r.get('SecondaryStatus', '-'):<22}"
                f" {r['CreationTime'][:19].replace('T', ' ')}"
            )
        return 0
    record = store.get(args.name)
    if args.verb == "describe" and record.kind == "processing":
        body = describe_processing(record)
        print(json.dumps(body, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in body.items()))
    elif args.verb == "describe":
        body = describe(record)
        samples = store.samples(args.name)
        if samples:
            body["SystemMetrics"] = profiling.summary(samples)
        analyses = store.page(JobFilter(kind="processing", explains=args.name), ascending=True)
        if analyses:  # dockyard's own: the Clarify jobs that explain this job's model
            body["Analyses"] = [
                {"ProcessingJobName": a.name, "ProcessingJobStatus": a.primary.value,
                 "CreationTime": a.creation_time.isoformat()}
                for a in analyses
            ]  # fmt: skip
        print(json.dumps(body, indent=2) if args.json else summary(body))
    elif args.verb == "profile":
        path = Path(args.output or f"{args.name}-profiler-report.html")
        path.write_text(profiler_report.render(record, store.samples(args.name), store.metrics(args.name)))
        print(f"profiler report: {path}")
        if args.open:
            webbrowser.open(path.resolve().as_uri())
    elif args.verb == "metrics":
        values = store.metrics(args.name)
        print(metrics_table(values))
        if args.plot is not None and values:
            path = Path(args.plot or f"{args.name}-metrics.png")
            plot_metrics(values, f"{args.name} ({record.status.primary.value})", path)
            print(f"chart: {path}")
    elif args.verb == "logs":
        if args.follow and not is_final(record.status.secondary):
            follow_log(store, settings, args.name)
        else:
            stored = store.log_lines(args.name)
            if not stored and not job_log.path(settings.home, args.name).exists():
                raise DockyardError(
                    f"{args.name} has no log lines yet, and its log file is not on this machine "
                    f"({job_log.path(settings.home, args.name)}): read it where the job was orchestrated"
                )
            print(job_log.whole(settings.home, args.name, stored), end="")
    elif args.verb == "keep-alive":
        keep_alive(store, settings, args.name, args.seconds)
    elif args.verb == "stop":
        store.request_stop(args.name, f"stop requested by {os.environ.get('USER', 'a user')}")
        print(f"asked {args.name} to stop; it uploads its artifacts and ends Stopped", file=sys.stderr)
    return 0
