"""A job's log on the machine that orchestrates it: DOCKYARD_HOME/jobs/NAME/job.log.

Every stage's and host's lines, time-stamped; `report` also sends a line to
the Prefect run's logger when there is a run to send it to.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger

LOG_FILE = "job.log"


def path(home: str | Path, name: str) -> Path:
    return Path(home) / "jobs" / name / LOG_FILE


def append(home: str | Path, name: str, line: str) -> None:
    """One line of the job's log (not sent to Prefect)."""
    log = path(home, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {line}\n")


def report(home: str | Path, name: str, message: str, level: int = logging.INFO) -> None:
    """A line for the user: to the Prefect run's log (when in one) and to the job's log."""
    if TaskRunContext.get() or FlowRunContext.get():
        get_run_logger().log(level, message)
    append(home, name, message if level < logging.WARNING else f"{logging.getLevelName(level).lower()}: {message}")


@dataclass(frozen=True)
class HostLine:
    """One line a job's container printed."""

    host: str  # algo-1, algo-2, ...
    at: datetime
    text: str


_HOST_LINE = re.compile(r"(?P<at>\S+) \[(?P<host>algo-\d+)\] (?P<text>.*)")


def host_lines(home: str | Path, name: str) -> list[HostLine]:
    """The container lines of a job's log, in order (the platform's own lines left out)."""
    try:
        raw = path(home, name).read_text(errors="replace")
    except OSError:
        return []
    lines = []
    for line in raw.splitlines():
        match = _HOST_LINE.fullmatch(line)
        if match is not None:
            with contextlib.suppress(ValueError):
                lines.append(HostLine(match["host"], datetime.fromisoformat(match["at"]), match["text"]))
    return lines
