"""The Prefect API that flow runs report to.

PREFECT_API_URL wins when set. Otherwise dockyard starts a local Prefect
server once (`prefect server start`, state under DOCKYARD_HOME/prefect) and
reuses it from then on: a flow run then costs about a second instead of the
many seconds an ephemeral API takes to start in every process, and the UI
and history stay at the printed URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard.errors import InfraError

START_TIMEOUT = 120.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise InfraError("no free local port for the Prefect server")


def state_file(home: str) -> Path:
    return Path(home) / "prefect" / "server.json"


def running_server(home: str) -> str | None:
    """The URL of the local server this home started, if it still answers."""
    try:
        url = str(json.loads(state_file(home).read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None
    return url if _healthy(url) else None


def start_server(home: str, report: Callable[[str], None], port: int = 4200) -> str:
    """Start a detached local Prefect server and wait until it answers.

    Raises:
        InfraError: it did not answer within START_TIMEOUT seconds.
    """
    prefect_home = Path(home) / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = _free_port(port)
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true"),
    }
    env.pop("PREFECT_API_URL", None)
    log = open(prefect_home / "server.log", "ab")  # noqa: SIM115 - handed to the server process
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    report(f"starting a local Prefect server at {url.removesuffix('/api')} (once; later runs reuse it)")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _healthy(url):
            state_file(home).write_text(json.dumps({"url": url, "pid": process.pid}))
            return url
        if process.poll() is not None:
            raise InfraError(
                f"the Prefect server exited (code {process.returncode}); see {prefect_home / 'server.log'}"
            )
        time.sleep(0.5)
    process.terminate()
    raise InfraError(
        f"the Prefect server did not answer within {START_TIMEOUT:.0f} s; "
        f"see {prefect_home / 'server.log'}, or set PREFECT_API_URL to a server"
    )


def ensure_api(home: str, report: Callable[[str], None]) -> str:
    """PREFECT_API_URL if set, else this home's local server, started if needed."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured
    return running_server(home) or start_server(home, report)


def stop_server(home: str) -> bool:
    """Stop the local server this home started; True if one was running."""
    try:
        pid = int(json.loads(state_file(home).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    try:
        os.killpg(pid, 15)
    except ProcessLookupError:
        return False
    state_file(home).unlink(missing_ok=True)
    return True


def cancel_requested(flow_run_id: str) -> bool:
    """True when someone asked Prefect to cancel this flow run (UI, CLI or API).

    A run started by a worker is also told by SIGTERM; a run started from the
    command line learns it only by asking, which the monitor does.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED)


def mark_cancelled(flow_run_id: str, message: str) -> None:
    """Move a flow run that honoured a cancellation request to Cancelled."""
    from prefect.states import Cancelled

    _force_state(flow_run_id, Cancelled(message=message))


def mark_crashed(flow_run_id: str, message: str) -> None:
    """Close the flow run of an orchestrator that died; another run carries on its job."""
    from prefect.states import Crashed

    _force_state(flow_run_id, Crashed(message=message))


def _force_state(flow_run_id: str, state: Any) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), state, force=True)


def label_flow_run(flow_run_id: str, name: str, tags: list[str]) -> None:
    """Name and tag a flow run after the job it runs, however it was started (CLI, UI, deployment)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(flow_run_id)).tags
        client.update_flow_run(UUID(flow_run_id), name=name, tags=sorted({*current, *tags}))
