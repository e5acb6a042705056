"""`dockyard server status|stop` on a real local Prefect server of a fresh DOCKYARD_HOME."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import prefect_api
from tests.conftest import free_port
from tests.integration.helpers import ROOT

pytestmark = pytest.mark.integration

DOCKYARD = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]


def dockyard(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(
        [*DOCKYARD, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "DOCKYARD_HOME": str(home)},
        timeout=60,
    )


def running(pid: int) -> bool:
    """True while `pid` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rindex(")") + 2 :].startswith("Z")


def test_status_shows_the_home_s_server_and_stop_ends_every_process_of_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = prefect_api.start_server(str(home), print, port=free_port())
    pid = int(json.loads((home / "prefect" / "server.json").read_text())["pid"])
    try:
        status = dockyard(home, "server", "status")
        assert status.returncode == 0, status.stderr
        shown = dict(line.split(":", 1) for line in status.stdout.splitlines())
        assert {k: v.strip() for k, v in shown.items() if k != "memory"} == {
            "url": url,
            "pid": str(pid),
            "home": str(home),
            "healthy": "yes",
        }
        assert shown["memory"].strip().endswith(" MB") and int(shown["memory"].split()[0]) > 50

        stop = dockyard(home, "server", "stop")
        assert stop.returncode == 0, stop.stderr
        assert f"stopped the local Prefect server of {home} (pid {pid}" in stop.stderr
        assert not running(pid)  # stop returns only once the process is gone
        assert not (home / "prefect" / "server.json").exists()

        after = dockyard(home, "server", "status")
        assert after.returncode == 3 and "no local Prefect server runs" in after.stderr
        again = dockyard(home, "server", "stop")
        assert again.returncode == 0 and "nothing to stop" in again.stderr
    finally:
        prefect_api.stop_server(str(home))
        with contextlib.suppress(ChildProcessError):  # this test started it: collect it, unless done already
            os.waitpid(pid, 0)
    assert not Path(f"/proc/{pid}").exists()


def test_a_stale_state_file_never_stops_the_process_that_now_has_its_pid(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = {"url": "http://127.0.0.1:9/api", "pid": bystander.pid}
        (home / "prefect" / "server.json").write_text(json.dumps(state))
        status = dockyard(home, "server", "status")
        assert status.returncode == 3, status.stdout
        stop = dockyard(home, "server", "stop")
        assert stop.returncode == 0 and "nothing to stop" in stop.stderr
        assert bystander.poll() is None  # still running
        assert not (home / "prefect" / "server.json").exists()
    finally:
        bystander.kill()
        bystander.wait()
