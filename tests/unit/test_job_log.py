"""A job's whole log: this machine's file with every host's container lines from the job store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dockyard.record import HostLine
from infra import job_log

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_whole_log_puts_the_stores_container_lines_among_the_files_own_lines_by_time(tmp_path: Path) -> None:
    job_log.append(tmp_path, "job", "Starting", _at(0))
    job_log.append(tmp_path, "job", "[algo-1] printed here", _at(1))  # in the store as well
    job_log.append(tmp_path, "job", "error: two lines\nthe second without a time", _at(3))
    job_log.append(tmp_path, "job", "[model] the shadow model's", _at(3.5))
    job_log.append(tmp_path, "job", "Completed", _at(5))
    stored = [
        HostLine("algo-1", _at(1), "printed here"),
        HostLine("algo-2", _at(2), "printed on another machine"),
        HostLine("model", _at(3.5), "the shadow model's"),
        HostLine("algo-2", _at(4), "[algo-1] looks like a line of algo-1"),
    ]
    lines = job_log.whole(tmp_path, "job", stored).splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "Starting",
        "[algo-1] printed here",
        "[algo-2] printed on another machine",
        "error: two lines",
        "second without a time",
        "[model] the shadow model's",
        "[algo-2] [algo-1] looks like a line of algo-1",
        "Completed",
    ]
    assert lines[0] == "2026-12-01T09:00:00.000+00:00 Starting"
    assert lines[2] == "2026-12-01T09:00:02.000+00:00 [algo-2] printed on another machine"


def test_without_stored_lines_the_file_is_the_log_and_without_either_it_is_empty(tmp_path: Path) -> None:
    assert job_log.whole(tmp_path, "job", []) == ""
    job_log.append(tmp_path, "job", "[algo-1] from before the store kept lines", _at(0))
    assert job_log.whole(tmp_path, "job", []).endswith("[algo-1] from before the store kept lines\n")
    assert [line.text for line in job_log.host_lines(tmp_path, "job")] == ["from before the store kept lines"]
