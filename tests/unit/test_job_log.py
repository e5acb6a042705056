"""A job's whole log: this machine's file with every host's container lines from the job store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dockyard.record import HostLine
from infra import job_log

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _texts(log: str) -> list[str]:
    return [line.split(" ", 1)[1] if line[:4] == "2026" else line for line in log.split("\n")[:-1]]


def test_the_whole_log_puts_every_hosts_container_lines_among_the_files_own_lines_by_time(tmp_path: Path) -> None:
    job_log.append(tmp_path, "job", "Starting", _at(0))
    job_log.append(tmp_path, "job", "[algo-1] printed here", _at(1))  # shipped to the store as well
    job_log.append(tmp_path, "job", "error: two lines\n2025-06-01 10:00:00,123 ERROR the second, a date first", _at(3))
    job_log.append(tmp_path, "job", "[model] the shadow model's", _at(3.5))
    job_log.append(tmp_path, "job", "[algo-1] not shipped (yet)", _at(4.5))
    job_log.append(tmp_path, "job", "Completed", _at(5))
    stored = [
        HostLine("algo-1", _at(1.0004), "printed here"),  # the store keeps microseconds, the file milliseconds
        HostLine("algo-2", _at(2), "printed on another machine"),
        HostLine("model", _at(3.5), "the shadow model's"),
        HostLine("algo-2", _at(4), "[algo-1] looks like a line of algo-1"),
        HostLine("algo-2", _at(4.2), "10%\r 20%\r 30%"),  # a progress bar's carriage returns: one line
    ]
    log = job_log.whole(tmp_path, "job", stored)
    assert _texts(log) == [
        "Starting",
        "[algo-1] printed here",
        "[algo-2] printed on another machine",
        "error: two lines",
        "2025-06-01 10:00:00,123 ERROR the second, a date first",
        "[model] the shadow model's",
        "[algo-2] [algo-1] looks like a line of algo-1",
        "[algo-2] 10%\r 20%\r 30%",
        "[algo-1] not shipped (yet)",
        "Completed",
    ]
    assert log.startswith("2026-12-01T09:00:00.000+00:00 Starting\n")
    assert "\n2026-12-01T09:00:02.000+00:00 [algo-2] printed on another machine\n" in log


def test_following_shows_each_container_line_once_from_whichever_source_has_it_first() -> None:
    merge = job_log.Merge()
    first = job_log.entries("2026-12-01T09:00:01.000+00:00 [algo-1] same\n" * 2)
    assert merge.lines(first, []) == ["2026-12-01T09:00:01.000+00:00 [algo-1] same"] * 2  # not shipped yet
    later = [HostLine("algo-1", _at(1), "same"), HostLine("algo-1", _at(1), "same"), HostLine("algo-1", _at(1), "x")]
    assert merge.lines([], later) == ["2026-12-01T09:00:01.000+00:00 [algo-1] x"]  # the two shown already


def test_without_stored_lines_the_file_is_the_log_and_without_either_it_is_empty(tmp_path: Path) -> None:
    assert job_log.whole(tmp_path, "job", []) == ""
    job_log.append(tmp_path, "job", "[algo-1] from before the store kept lines", _at(0))
    assert job_log.whole(tmp_path, "job", []).endswith("[algo-1] from before the store kept lines\n")
    assert [line.text for line in job_log.host_lines(tmp_path, "job")] == ["from before the store kept lines"]
