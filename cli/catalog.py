"""`dockyard search` and `dockyard models list`: the MLflow catalog."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from dockyard.search import order_clause, parse_query
from dockyard.settings import Settings
from infra import catalog


def add_verbs(sub: Any) -> None:
    """The search and models sub-commands, on `dockyard`'s parser."""
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


def search(args: argparse.Namespace, settings: Settings) -> int:
    """`dockyard search QUERY`: training or tuning jobs in the MLflow catalog."""
    clauses = parse_query(args.query)
    kind = "tuning-job" if args.tuning_jobs else "training-job"
    order = [order_clause(o) for o in args.order_by]
    found = catalog.find_jobs(settings.catalog_uri(), clauses, order, args.max_results, kind)
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


def models(args: argparse.Namespace, settings: Settings) -> int:
    """`dockyard models list`: every registered model version."""
    versions = catalog.model_versions(settings.catalog_uri())
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
