"""`dockyard search` queries, as SageMaker's Search filters training jobs.

    metrics.validation:auc > 0.95 and params.eta < '0.3' and status = 'Completed'

Clauses are KEY OP VALUE joined by `and`. KEY is metrics.NAME, params.NAME,
tags.NAME or attributes.NAME (MLflow's names; NAME may hold ':' or '/', or be
`back-quoted`), or a shortcut: `name` (the job name) or `status` (the job's
TrainingJobStatus). MLflow compares params and tags only as strings (=, !=,
LIKE, ILIKE), so a param or tag compared with <, <=, > or >= is checked here,
as numbers when both sides are, else as strings.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.errors import FieldProblem, JobSpecError

SHORTCUTS = {"name": ("tags", "dockyard.job_name"), "status": ("tags", "dockyard.status")}
KINDS = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "hyperparameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
_CLAUSE = re.compile(
    r"^\s*(?P<key>`[^`]+`|[A-Za-z_][\w]*(?:\.(?:`[^`]+`|\"[^\"]+\"|[\w.:/\-]+))?)\s*"
    r"(?P<op><=|>=|!=|=|<|>|\bnot\s+ilike\b|\bnot\s+like\b|\bilike\b|\blike\b|\bis\s+not\s+null\b|\bis\s+null\b)"
    r"\s*(?P<value>'[^']*'|\"[^\"]*\"|-?[0-9.eE+\-]+)?\s*$",
    re.IGNORECASE,
)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_ORDERS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
EXAMPLE = "metrics.validation:auc > 0.95 and params.eta < '0.3'"


@dataclass(frozen=True)
class Clause:
    kind: str  # metrics | params | tags | attributes
    key: str
    op: str
    value: str | None  # as written, quotes and all; None for IS [NOT] NULL

    def mlflow(self) -> str:
        return f"{self.kind}.`{self.key}` {self.op}" + (f" {self.value}" if self.value is not None else "")

    def pushed_down(self) -> bool:
        """Whether MLflow can evaluate the clause itself."""
        return self.kind in ("metrics", "attributes") or self.op not in _ORDERS

    def matches(self, runs_value: str | None) -> bool:
        """For a clause MLflow cannot evaluate: does a run's param or tag value satisfy it?"""
        if runs_value is None or self.value is None:
            return False
        wanted = self.value.strip("'\"")
        compare = _ORDERS[self.op]
        try:
            return bool(compare(float(runs_value), float(wanted)))
        except ValueError:
            return bool(compare(runs_value, wanted))


def _split(text: str) -> list[str]:
    """Split on `and` outside quotes."""
    parts, depth_quote, start = [], None, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if depth_quote:
            if ch == depth_quote:
                depth_quote = None
        elif ch in "'\"`":
            depth_quote = ch
        else:
            found = _AND.match(text, i)
            if found:
                parts.append(text[start:i])
                start = i = found.end()
                continue
        i += 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _key(raw: str) -> tuple[str, str]:
    if "." not in raw or raw.startswith("`"):
        name = raw.strip("`")
        if name.lower() in SHORTCUTS:
            return SHORTCUTS[name.lower()]
        raise ValueError(f"'{raw}' names no kind of field")
    kind, _, name = raw.partition(".")
    if kind.lower() not in KINDS:
        raise ValueError(f"'{kind}' is not metrics, params, tags or attributes")
    return KINDS[kind.lower()], name.strip('`"')


def parse_query(text: str) -> list[Clause]:
    """Raises: JobSpecError naming each clause that does not parse."""
    clauses, problems = [], []
    for part in _split(text):
        found = _CLAUSE.match(part)
        try:
            if not found:
                raise ValueError("is not KEY OP VALUE")
            kind, key = _key(found["key"])
        except ValueError as exc:
            problems.append(FieldProblem(f"search '{part}'", str(exc), f"write clauses like: {EXAMPLE}"))
            continue
        op = " ".join(found["op"].upper().split())
        if found["value"] is None and "NULL" not in op:
            problems.append(FieldProblem(f"search '{part}'", "has no value", f"write clauses like: {EXAMPLE}"))
            continue
        clauses.append(Clause(kind, key, op, found["value"]))
    if problems:
        raise JobSpecError(problems)
    return clauses


def order_clause(text: str) -> str:
    """`metrics.validation:auc DESC` as MLflow's order_by wants it.

    Raises: JobSpecError when the key names no kind of field.
    """
    key, _, direction = text.strip().partition(" ")
    try:
        kind, name = _key(key)
    except ValueError as exc:
        raise JobSpecError(
            [FieldProblem("--order-by", str(exc), "e.g. --order-by 'metrics.validation:auc DESC'")]
        ) from None
    return f"{kind}.`{name}` {direction.strip().upper() or 'ASC'}".strip()
