"""A job's log on the machine that orchestrates it: DOCKYARD_HOME/jobs/NAME/job.log.

Every stage's and host's lines, time-stamped; `report` also sends a line to
the Prefect run's logger when there is a run to send it to. The containers'
lines are in the job store too, every host's (a job spread over a fleet has
instances on other machines): `whole` puts the two together.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
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


_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"  # what `stamped` writes
_LINE = re.compile(rf"(?P<at>{_STAMP}) (?:\[(?P<host>algo-\d+|model)\] )?(?P<text>.*)", re.DOTALL)


def stamped(at: datetime, text: str) -> str:
    """A line as the log file writes it."""
    return f"{at.astimezone(UTC).isoformat(timespec='milliseconds')} {text}"


def container_line(line: HostLine) -> str:
    return stamped(line.at, f"[{line.host}] {line.text}")


@dataclass(frozen=True)
class Entry:
    """One line of a log file."""

    at: datetime  # a line without a stamp (a message's second line): the stamp of the line before
    line: str
    host_line: HostLine | None  # a container's line (the shadow model's included)


def entries(text: str) -> list[Entry]:
    """A log file's lines, split at newlines only: a container's carriage returns stay in its line."""
    found: list[Entry] = []
    last = datetime.min.replace(tzinfo=UTC)
    for line in text.split("\n")[: -1 if text.endswith("\n") else None] if text else []:
        match = _LINE.fullmatch(line)
        if match is None:
            found.append(Entry(last, line, None))
            continue
        last = datetime.fromisoformat(match["at"])
        host = match["host"]
        found.append(Entry(last, line, HostLine(host, last, match["text"]) if host else None))
    return found


def _key(line: HostLine) -> tuple[str, datetime, str]:
    """A container line as both the file (to the millisecond) and the job store hold it."""
    return line.host, line.at.replace(microsecond=line.at.microsecond // 1000 * 1000), line.text


class Merge:
    """A job's log lines from this machine's file and its container lines from the job store, put
    together in time order, each container line once: one both hold (the same host, millisecond and
    text) is shown from whichever gave it first, also across calls (following a log)."""

    def __init__(self) -> None:
        self.from_file: Counter[tuple[str, datetime, str]] = Counter()
        self.from_store: Counter[tuple[str, datetime, str]] = Counter()

    def lines(self, file: list[Entry], stored: list[HostLine]) -> list[str]:
        keyed: list[tuple[datetime, int, str]] = []
        for order, line in enumerate(stored):
            key = _key(line)
            if self.from_file[key]:
                self.from_file[key] -= 1
                continue
            self.from_store[key] += 1
            keyed.append((line.at, order, container_line(line)))
        for order, entry in enumerate(file, start=len(stored)):
            if entry.host_line is not None:
                key = _key(entry.host_line)
                if self.from_store[key]:  # shipped to the store: shown from there
                    self.from_store[key] -= 1
                    continue
                self.from_file[key] += 1  # not in the store (yet): shown from the file
            keyed.append((entry.at, order, entry.line))
        return [line for _, _, line in sorted(keyed, key=lambda k: (k[0], k[1]))]


def whole(home: str | Path, name: str, stored: list[HostLine]) -> str:
    """The job's whole log: this machine's file, with every host's container lines from the job
    store (`stored`); a line the store lacks (a job from before it kept them) from the file."""
    try:
        text = path(home, name).read_text(errors="replace")
    except OSError:
        text = ""
    return "".join(f"{line}\n" for line in Merge().lines(entries(text), stored))


def host_lines(home: str | Path, name: str) -> list[HostLine]:
    """The container lines of this machine's log file, in order (the platform's own left out)."""
    try:
        raw = path(home, name).read_text(errors="replace")
    except OSError:
        return []
    return [e.host_line for e in entries(raw) if e.host_line is not None]
