"""A job's log on the machine that orchestrates it: DOCKYARD_HOME/jobs/NAME/job.log.

Every stage's and host's lines, time-stamped; `report` also sends a line to
the Prefect run's logger when there is a run to send it to. The containers'
lines are in the job store too, every host's (a job spread over a fleet has
instances on other machines): `whole` puts the two together.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger

from dockyard.record import HostLine

LOG_FILE = "job.log"


def path(home: str | Path, name: str) -> Path:
    return Path(home) / "jobs" / name / LOG_FILE


def append(home: str | Path, name: str, line: str, at: datetime | None = None) -> None:
    """One line of the job's log (not sent to Prefect), stamped `at` (else now)."""
    log = path(home, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(stamped(at or datetime.now(UTC), line) + "\n")


def report(home: str | Path, name: str, message: str, level: int = logging.INFO) -> None:
    """A line for the user: to the Prefect run's log (when in one) and to the job's log."""
    if TaskRunContext.get() or FlowRunContext.get():
        get_run_logger().log(level, message)
    append(home, name, message if level < logging.WARNING else f"{logging.getLevelName(level).lower()}: {message}")


_HOST_LINE = re.compile(r"(?P<at>\S+) \[(?P<host>algo-\d+)\] (?P<text>.*)")
_CONTAINER_LINE = re.compile(r"\S+ \[(algo-\d+|model)\] ")  # a container's line, the shadow model's included


def stamped(at: datetime, text: str) -> str:
    """A line as the log file writes it."""
    return f"{at.astimezone(UTC).isoformat(timespec='milliseconds')} {text}"


def container_line(line: HostLine) -> str:
    return stamped(line.at, f"[{line.host}] {line.text}")


def platform_lines(text: str) -> list[tuple[datetime | None, str]]:
    """The lines of a log file's text that are not a container's, each with its time (None for a
    line without one: a continuation of the one before)."""
    found: list[tuple[datetime | None, str]] = []
    for line in text.splitlines():
        if _CONTAINER_LINE.match(line):
            continue
        try:
            at: datetime | None = datetime.fromisoformat(line.split(" ", 1)[0])
        except ValueError:
            at = None
        found.append((at, line))
    return found


def interleave(platform: list[tuple[datetime | None, str]], containers: list[HostLine]) -> list[str]:
    """Platform lines and container lines in time order (a platform line without a time stays
    with the one before it)."""
    keyed: list[tuple[datetime, int, str]] = []
    last = datetime.min.replace(tzinfo=UTC)
    for order, (at, line) in enumerate(platform):
        last = at or last
        keyed.append((last, order, line))
    keyed += [(x.at, len(platform) + i, container_line(x)) for i, x in enumerate(containers)]
    return [line for _, _, line in sorted(keyed, key=lambda k: (k[0], k[1]))]


def whole(home: str | Path, name: str, stored: list[HostLine]) -> str:
    """The job's whole log: this machine's file, with every host's container lines from the job
    store (`stored`) in place of its own; the file as it is when the store has none (a job from
    before the store kept them)."""
    try:
        text = path(home, name).read_text(errors="replace")
    except OSError:
        text = ""
    if not stored:
        return text
    return "".join(f"{line}\n" for line in interleave(platform_lines(text), stored))


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
