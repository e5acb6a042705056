"""The Prefect API that flow runs report to.

PREFECT_API_URL wins when set. Otherwise dockyard starts a local Prefect
server once (`prefect server start`, state under DOCKYARD_HOME/prefect) and
reuses it from then on: a flow run then costs about a second instead of the
many seconds an ephemeral API takes to start in every process, and the UI
and history stay at the printed URL. It runs until `dockyard server stop`
(stop_server) ends it; `dockyard server status` (local_server) shows it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.errors import InfraError

START_TIMEOUT = 120.0
log = logging.getLogger("dockyard.prefect")
STOP_GRACE_SECONDS = 10.0  # SIGTERM, then SIGKILL for what is left of the server's process group


@dataclass(frozen=True)
class LocalServer:
    """The Prefect server a DOCKYARD_HOME started, as its state file records it."""

    url: str  # the API URL, http://127.0.0.1:PORT/api
    pid: int  # the server process, leader of a process group of its own


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
    end_group(process.pid, STOP_GRACE_SECONDS)
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


def local_server(home: str) -> LocalServer | None:
    """The server this home started, if its process still runs (healthy or not)."""
    try:
        state = json.loads(state_file(home).read_text())
        server = LocalServer(url=str(state["url"]), pid=int(state["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server if _is_prefect_server(server.pid) else None


def healthy(server: LocalServer) -> bool:
    """True when the server answers its health check."""
    return _healthy(server.url)


def memory_bytes(server: LocalServer) -> int:
    """Resident memory of the server's whole process group (from /proc)."""
    total = 0
    for pid in _group_members(server.pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # it ended while we looked
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def stop_server(home: str, grace: float = STOP_GRACE_SECONDS) -> LocalServer | None:
    """Stop the local server this home started and wait until its processes are gone.

    SIGTERM to its process group, SIGKILL to what is left after `grace` seconds;
    the state file goes either way. Returns the server it stopped, None if none ran.
    """
    server = local_server(home)
    if server is not None:
        end_group(server.pid, grace)
    state_file(home).unlink(missing_ok=True)
    return server


def _is_prefect_server(pid: int) -> bool:
    """True if `pid` runs `prefect server start`: a recycled pid of a stale state file is someone else's."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    stat = _proc_stat(pid)
    return b"prefect" in argv and b"server" in argv and stat is not None and stat[0] != "Z"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter (R, S, Z, ...) and process group, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        stat = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            members.append(int(entry.name))
    return members


def end_group(pgid: int, grace: float) -> None:
    """SIGTERM a process group, SIGKILL it after `grace` seconds, and wait until none of it is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pgid)
            if not _group_members(pgid):
                return
            time.sleep(0.1)
    raise InfraError(f"the processes of group {pgid} are still there after SIGKILL")


def _reap(pid: int) -> None:
    """Collect the exit status of a server this process started itself, so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):  # not our child: its own parent (or init) collects it
        os.waitpid(pid, os.WNOHANG)


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


def label_flow_run(flow_run_id: str, name: str, tags: list[str], job: dict[str, Any] | None = None) -> None:
    """Name and tag a flow run after the job it runs, however it was started (CLI, UI, deployment);
    with `job`, that becomes its `job` parameter (the spec with its secrets as references, in place
    of the document a Python caller passed with their values)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(flow_run_id))
        parameters = {**current.parameters, "job": job} if job is not None else None
        client.update_flow_run(UUID(flow_run_id), name=name, tags=sorted({*current.tags, *tags}), parameters=parameters)


# The deployments `dockyard serve` submits jobs to, by flow, each named after its
# work pool (train/dockyard): entrypoints are module paths, so they load
# wherever dockyard is installed.
# instances: a machine's part of a job spanning machines (only `dockyard worker` runs those).
API_DEPLOYMENTS = {
    "train": "flows.train:train", "tune": "flows.tune:tune", "process": "flows.process:process",
    "instances": "flows.instances:instances",
}  # fmt: skip


def ensure_deployments(work_pool: str, report: Callable[[str], None], patience: float = START_TIMEOUT) -> None:
    """Create (or update) the process work pool and the train, tune, process and instances deployments on it.

    A busy Prefect server answers 503 (its database locked) or drops the
    connection: that is retried, with backoff, for up to `patience` seconds.

    Raises:
        InfraError: the API kept failing, or failed in a way retrying cannot fix.
    """
    from infra.retry import with_backoff

    def busy(exc: BaseException, delay: float) -> None:
        report(f"Prefect API busy ({type(exc).__name__}); creating the deployments again in {delay:.0f} s")

    try:
        with_backoff(lambda: _create_deployments(work_pool), patience, first_delay=2.0, on_retry=busy)
    except Exception as exc:  # the server's own error, once retrying is over or cannot help
        raise InfraError(
            f"Prefect API: could not create the work pool '{work_pool}' and its deployments "
            f"({type(exc).__name__}: {exc}); check the server (`dockyard server status`, its log) "
            "and start again"
        ) from exc


def _create_deployments(work_pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"))
        for flow_name, entrypoint in API_DEPLOYMENTS.items():
            flow_id = client.create_flow_from_name(flow_name)
            client.create_deployment(
                flow_id=flow_id,
                name=work_pool,
                entrypoint=entrypoint,
                work_pool_name=work_pool,
                description=f"{flow_name} jobs created through dockyard serve's SageMaker API",
                tags=["dockyard", "sagemaker-api"],
            )


def submit(
    flow_name: str,
    work_pool: str,
    parameters: dict[str, Any],
    name: str,
    tags: list[str],
    work_queue: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Create a flow run of `flow_name`'s deployment on `work_pool` (on its `work_queue`, else
    its default queue), for a worker to pick up; returns its id. A second call with the same
    `idempotency_key` returns the first one's run."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"{flow_name}/{work_pool}")
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, name=name, tags=tags, work_queue_name=work_queue,
            idempotency_key=idempotency_key,
        )  # fmt: skip
    return str(flow_run.id)


def ensure_work_queue(work_pool: str, name: str) -> None:
    """A work queue `name` on `work_pool` (a fleet host's own: the runs placed on it)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_queue(name=name, work_pool_name=work_pool)


def run_ended(flow_run_id: str) -> bool:
    """True when the flow run is in a final state (completed, failed, crashed, cancelled) or gone."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(UUID(flow_run_id)).state
        except ObjectNotFound:
            return True
    return state is not None and state.is_final()


def run_waiting(flow_run_id: str) -> bool:
    """True while no worker has started the flow run (it is Scheduled or Pending)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return state is not None and (state.is_scheduled() or state.is_pending())


def cancel_if_waiting(flow_run_id: str, message: str) -> bool:
    """Cancel a flow run no worker has started yet; True if it was still waiting."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
        if state is None or not (state.is_scheduled() or state.is_pending()):
            return False
        result: Any = client.set_flow_run_state(UUID(flow_run_id), Cancelled(message=message))
    return bool(result.status.value == "ACCEPT")


def cancel(flow_run_id: str, message: str) -> None:
    """Ask Prefect to cancel a running flow run: its worker stops the process (SIGTERM),
    which ends the work gracefully."""
    from prefect.states import Cancelling

    _force_state(flow_run_id, Cancelling(message=message))


# -- this machine's worker ------------------------------------------------------

WORKER_QUERY_SECONDS = "1"  # how often the worker asks for new flow runs (Prefect's default: 10)


@dataclass(frozen=True)
class LocalWorker:
    """The Prefect process worker `dockyard serve` started for a DOCKYARD_HOME."""

    pid: int  # leader of a process group of its own
    pool: str
    limit: int
    log: Path


def _worker_file(home: str) -> Path:
    return Path(home) / "serve" / "worker.json"


def local_worker(home: str) -> LocalWorker | None:
    """The worker this home started, if it still runs."""
    try:
        state = json.loads(_worker_file(home).read_text())
        worker = LocalWorker(int(state["pid"]), str(state["pool"]), int(state["limit"]), Path(state["log"]))
        argv = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stat = _proc_stat(worker.pid)
    alive = stat is not None and stat[0] != "Z" and b"worker" in argv and worker.pool.encode() in argv
    return worker if alive else None


def worker_command(pool: str, limit: int, name: str | None = None, queues: tuple[str, ...] = ()) -> list[str]:
    """The command line of a Prefect process worker on `pool` running at most `limit` flow runs at
    once, from `queues` (else every queue of the pool)."""
    named = ["--name", name] if name else []
    polled = [arg for queue in queues for arg in ("--work-queue", queue)]
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
            "--limit", str(limit), *named, *polled]  # fmt: skip


def worker_environment() -> dict[str, str]:
    """This process's environment, with the worker's polling interval."""
    return {
        **os.environ,
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS") or WORKER_QUERY_SECONDS,
    }


def start_worker(home: str, pool: str, limit: int) -> LocalWorker:
    """Start a detached Prefect process worker on `pool`, running at most `limit` flow runs at once.

    It outlives the command that started it, as the local server does: the flow
    runs it starts are its children, and stopping it interrupts them. It runs
    with this process's environment (PREFECT_API_URL included), which its flow
    runs inherit.
    """
    log = Path(home) / "serve" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = worker_environment()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            worker_command(pool, limit, queues=("default",)),  # not the fleet hosts' own queues
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    worker = LocalWorker(process.pid, pool, limit, log)
    _worker_file(home).write_text(json.dumps({"pid": worker.pid, "pool": pool, "limit": limit, "log": str(log)}))
    return worker


def stop_worker(home: str, grace: float = STOP_GRACE_SECONDS) -> LocalWorker | None:
    """Stop this home's worker (and so the flow runs it is running); returns it, or None if none ran."""
    worker = local_worker(home)
    if worker is not None:
        end_group(worker.pid, grace)
    _worker_file(home).unlink(missing_ok=True)
    return worker


RULE_EVENT = "dockyard.rule.issues-found"


def emit_rule_event(job: str, configuration: str, rule: str, details: str | None) -> None:
    """Tell Prefect a job's rule fired, so an automation can notify someone; never fails the caller."""
    from prefect.events import emit_event

    rule_resource = {"prefect.resource.id": f"dockyard.rule.{configuration}", "prefect.resource.role": "rule"}
    payload = {"training_job_name": job, "rule_configuration_name": configuration, "rule": rule, "details": details}
    try:
        emit_event(
            event=RULE_EVENT,
            resource={"prefect.resource.id": f"dockyard.training-job.{job}", "prefect.resource.name": job},
            related=[rule_resource | {"prefect.resource.name": rule}],
            payload=payload,
        )
    except Exception as exc:  # noqa: BLE001 - the rule's status is recorded whether or not Prefect hears of it
        log.warning("rule event for %s not emitted: %s", job, exc)


def link_artifact(key: str, uri: str, description: str) -> None:
    """A link artifact on the current flow run (none outside one); never fails the caller."""
    from prefect.artifacts import create_link_artifact

    try:
        create_link_artifact(key=key, link=uri, link_text=uri.rsplit("/", 1)[-1], description=description)
    except Exception as exc:  # noqa: BLE001 - an artifact is a convenience
        log.warning("artifact %s not created: %s", key, exc)
