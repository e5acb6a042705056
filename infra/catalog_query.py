"""Which catalogued jobs match a search: their names, in order, in one SQL query.

MLflow's `search_runs` builds every run it returns whole (all its tags, params
and latest metrics, its inputs and outputs) and compares params only as
strings: for a Search page of 100 with a HyperParameters comparison it built
404 whole runs to find 101 names (0.6 s at 1,000 jobs on 2 cores). Where the
tracking URI is a database that MLflow's SQLAlchemy store serves (SQLite,
PostgreSQL), `job_names` asks that database for the names alone, with the
filters, order and tie-breaks `search_runs` applies, written over MLflow's own
table models (the installed MLflow's schema, which its migrations keep).
MLflow has no API for ids alone; tests/integration/test_catalog_query.py runs
both paths on one catalog and compares. Any other catalog (a tracking server)
is searched through MLflow's API.
"""

from __future__ import annotations

import functools
import operator
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, case, create_engine, event, exists, false, or_, select, true
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dockyard.search import Clause
from infra import catalog

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, FromClause, Select

SERVED = ("sqlite", "postgresql")  # the backends whose SQL this module writes (MySQL compares otherwise)
_COMPARISONS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STRING_OPS = {"=", "!=", "LIKE", "ILIKE"}  # what MLflow compares params and tags with
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


MAX_AMONG = 30_000  # names one query may be restricted to (SQLite takes 32,766 bound values)


def job_names_any(
    uri: str, alternatives: list[list[Clause]], order_by: list[str], max_results: int, kind: str
) -> list[str]:
    """`job_names` for jobs matching every clause of at least one alternative (an Or of Ands).

    The first `max_results` of the union are among the first `max_results` of each
    alternative: those, then ordered together in one more query.

    Raises:
        ValueError: several alternatives where the catalog is not a database this module queries.
        MlflowException: a clause or order MLflow refuses (on the API path).
    """
    if len(alternatives) == 1:
        return job_names(uri, alternatives[0], order_by, max_results, kind)
    if not _served(uri):
        raise ValueError("Or needs the catalog in a database dockyard queries (SQLite or PostgreSQL)")
    found: set[str] = set()
    for clauses in alternatives:
        found.update(job_names(uri, clauses, order_by, max_results, kind))
    if not found:
        return []
    if len(found) > MAX_AMONG:
        raise ValueError(f"Or over {len(found)} jobs: page with fewer results (MaxResults) or narrower filters")
    query = _build((), tuple(order_by), kind, tuple(sorted(found)))
    assert query is not None  # no clause to leave to MLflow, and the orders were served for each alternative
    with _engine(uri).connect() as conn:
        return [row.name for row in conn.execute(query[0].limit(max_results))]


def job_names(uri: str, clauses: list[Clause], order_by: list[str], max_results: int, kind: str) -> list[str]:
    """The names of the first `max_results` training (or tuning) jobs matching every clause, in
    `order_by`'s order (MLflow's order strings), as catalog.find_jobs finds them.

    Raises:
        MlflowException: a clause or order MLflow refuses (on the API path).
    """
    query = _query(tuple(clauses), tuple(order_by), kind) if _served(uri) else None
    if query is None:
        runs = catalog.find_jobs(uri, clauses, order_by, max_results, kind)
        return [n for n in (r.data.tags.get(catalog.JOB_TAG) for r in runs) if n]
    sql, checked_here = query
    if not checked_here:
        sql = sql.limit(max_results)
    found: list[str] = []
    with _engine(uri).connect() as conn:
        for row in conn.execute(sql):  # rows stream in order: stop once enough passed the checks
            if all(c.matches(v) for c, v in zip(checked_here, row[1:], strict=True)):
                found.append(row.name)
                if len(found) == max_results:
                    break
    return found


def _served(uri: str) -> bool:
    try:
        return make_url(uri).get_backend_name() in SERVED
    except ArgumentError:  # a path, or a tracking server's address
        return False


def _engine(uri: str) -> Engine:
    """One engine per catalog, once MLflow has made (or migrated) the catalog's tables."""
    catalog.client(uri)
    with _engines_lock:
        if uri not in _engines:
            sqlite = make_url(uri).get_backend_name() == "sqlite"
            engine = create_engine(uri, connect_args={"timeout": 20} if sqlite else {}, pool_pre_ping=not sqlite)
            if sqlite:  # MLflow's LIKE is case-sensitive on every backend
                event.listen(engine, "connect", _case_sensitive_like)
            _engines[uri] = engine
        return _engines[uri]


def _case_sensitive_like(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA case_sensitive_like = true")


class _Unserved(Exception):
    """A clause or an order this module does not write: MLflow's API answers instead."""


@functools.lru_cache(maxsize=256)  # a server is asked the same searches again (paging, polling)
def _query(
    clauses: tuple[Clause, ...], order_by: tuple[str, ...], kind: str
) -> tuple[Select[Any], list[Clause]] | None:
    return _build(clauses, order_by, kind, ())


def _build(
    clauses: tuple[Clause, ...], order_by: tuple[str, ...], kind: str, among: tuple[str, ...]
) -> tuple[Select[Any], list[Clause]] | None:
    """The query of (name, the value of each clause checked here), only of the jobs named in
    `among` when it names any; or None where MLflow's API must answer."""
    checked_here = [c for c in clauses if not c.pushed_down()]
    try:
        query = _Query()
        if among:
            query.where.append(query.name.c.value.in_(among))
        for c in [*(c for c in clauses if c.pushed_down()), Clause("tags", catalog.KIND_TAG, "=", f"'{kind}'")]:
            query.filter(c)
        values = [query.value_of(c) for c in checked_here]
        for text in order_by:
            query.sort(text)
    except _Unserved:
        return None
    return query.select(values), checked_here


class _Query:
    """search_runs' query, built up: runs joined to a row per filter, the order MLflow gives them."""

    def __init__(self) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun, SqlTag

        self.runs, experiments = SqlRun.__table__, SqlExperiment.__table__
        self.name = SqlTag.__table__.alias("job_name")
        self.joined: FromClause = self.runs.join(self.name, self._row_of(self.name, catalog.JOB_TAG))
        active = select(experiments.c.experiment_id).where(experiments.c.lifecycle_stage == "active")
        self.where: list[ColumnElement[bool]] = [
            self.runs.c.lifecycle_stage == "active",
            self.runs.c.experiment_id.in_(active),
        ]
        self.order: list[Any] = []
        self.by_start_time = False
        self._aliases = 0

    def _alias(self, kind: str) -> Any:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlTag

        model: Any = {"metrics": SqlLatestMetric, "params": SqlParam, "tags": SqlTag}.get(kind)
        if model is None:
            raise _Unserved(kind)
        self._aliases += 1
        return model.__table__.alias(f"{kind}_{self._aliases}")

    def _row_of(self, row: Any, key: str) -> ColumnElement[bool]:
        return and_(row.c.run_uuid == self.runs.c.run_uuid, row.c.key == key)

    def filter(self, c: Clause) -> None:
        row = self._alias(c.kind)
        if c.op in ("IS NULL", "IS NOT NULL"):
            present = exists(select(row.c.run_uuid).where(self._row_of(row, c.key)))
            self.where.append(~present if c.op == "IS NULL" else present)
        else:
            self.joined = self.joined.join(row, and_(self._row_of(row, c.key), _compare(c, row)))

    def value_of(self, c: Clause) -> Any:
        """The run's value of a clause's param or tag (None without one), to check here."""
        row = self._alias(c.kind)
        self.joined = self.joined.outerjoin(row, self._row_of(row, c.key))
        return row.c.value

    def sort(self, text: str) -> None:
        """One more order, missing values (and NaNs) last whichever the direction, as MLflow sorts."""
        kind, key, ascending = _order_key(text)
        if kind == "attributes":
            value, last = self.runs.c.start_time, case((self.runs.c.start_time.is_(None), 1), else_=0)
            self.by_start_time = True
        else:
            row = self._alias(kind)
            self.joined = self.joined.outerjoin(row, self._row_of(row, key))
            value = row.c.value
            last = (
                case((row.c.is_nan == true(), 1), (value.is_(None), 2), else_=0)
                if kind == "metrics"
                else case((value.is_(None), 1), else_=0)
            )
        self.order += [last, value if ascending else value.desc()]

    def select(self, values: list[Any]) -> Select[Any]:
        tie_breaks = (
            [self.runs.c.run_uuid] if self.by_start_time else [self.runs.c.start_time.desc(), self.runs.c.run_uuid]
        )
        return (
            select(self.name.c.value.label("name"), *values)
            .select_from(self.joined)
            .where(*self.where)
            .order_by(*self.order, *tie_breaks)
        )


def _compare(c: Clause, row: Any) -> ColumnElement[bool]:
    """The clause's test of a joined row's value, as MLflow's SQLAlchemy store writes it."""
    if c.value is None:
        raise _Unserved(c.op)
    if c.kind == "metrics":
        try:
            test = _COMPARISONS[c.op](row.c.value, float(c.value))
        except (KeyError, ValueError):
            raise _Unserved(c.op) from None
        # MLflow keeps a NaN as 0 with is_nan set: it satisfies != and nothing else.
        return or_(test, row.c.is_nan == true()) if c.op == "!=" else and_(test, row.c.is_nan == false())
    quoted = len(c.value) >= 2 and c.value[0] in "'\"" and c.value[-1] == c.value[0]
    if c.op not in _STRING_OPS or not quoted:
        raise _Unserved(c.op)
    value = c.value[1:-1]  # MLflow strips the quotes and nothing else
    if c.op == "LIKE":
        return row.c.value.like(value)
    if c.op == "ILIKE":
        return row.c.value.ilike(value)
    return _COMPARISONS[c.op](row.c.value, value)


def _order_key(text: str) -> tuple[str, str, bool]:
    """(kind, key, ascending) of an MLflow order string.

    Raises:
        _Unserved: an order this module does not write (an attribute but start_time).
    """
    field, _, direction = text.strip().partition(" ")
    kind, _, key = field.partition(".")
    key, direction = key.strip("`"), direction.strip().upper() or "ASC"
    if direction not in ("ASC", "DESC") or not key or kind not in ("attributes", "metrics", "params", "tags"):
        raise _Unserved(text)
    if kind == "attributes" and key != "start_time":
        raise _Unserved(text)
    return kind, key, direction == "ASC"
