"""`dockyard worker`: make this machine a host of the fleet.

    dockyard worker [--name NAME] [--address ADDR] [--label KEY=VALUE ...] [--jobs N]

Registers the machine in the job store (its engine's vCPUs, memory and GPUs,
their kind, the free disk, its labels), heartbeats it, and runs Prefect
process workers on the dockyard work pool (one for the jobs placed on this
host, one for new jobs) whose flow runs take their capacity on this host:
GPUs are never granted twice, vCPUs and memory add up within it, and a job
waits Pending, saying what is free, until its instances fit.
Like `dockyard serve`, it hands a job whose orchestrator died (a worker
killed, a machine gone) back to the work pool, so no job of the pool waits
forever for a dead process. A fleet shares one Prefect server (PREFECT_API_URL), one job store
(DOCKYARD_DATABASE_URL at PostgreSQL), one catalog (MLFLOW_TRACKING_URI) and
S3 storage: set them alike on every machine. Ctrl-C or SIGTERM stops the
worker and the flow runs it started; the host stays registered, and its
missed heartbeats show it silent.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from api import recovery
from api.training import Context
from cli.render import say
from cli.session import use_prefect
from dockyard.errors import DockyardError
from dockyard.fleet import HEARTBEAT_SECONDS, Host
from dockyard.settings import Settings
from infra import docker_engine, prefect_api
from infra.fleet import Fleet, disk_free, this_machine
from infra.job_store import open_store, redacted
from tasks.warm_pool import sweep

GIB = 1024**3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard worker", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=socket.gethostname(), help="the host's name in the fleet (default: hostname)")
    parser.add_argument("--address", help="where peers reach this machine (default: its default route's address)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")
    parser.add_argument(
        "--jobs", type=int, default=max(2, os.cpu_count() or 2), help="flow runs at once (default: cores)"
    )
    return parser


def _name(name: str) -> str:
    """Raises: DockyardError for a name the fleet cannot take."""
    if name == "default" or not name.strip():
        raise DockyardError(
            f"--name {name!r}: the pool's default work queue has that name — choose another, e.g. --name gpu-1"
        )
    return name


def _address(address: str | None) -> str | None:
    """The IP address of --address (a name is resolved: containers' /etc/hosts take addresses).

    Raises: DockyardError for a name that does not resolve."""
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(address, None, socket.AF_INET)[0][4][0])
    except OSError:
        raise DockyardError(
            f"--address {address!r}: neither an IP address nor a name that resolves — give the address the "
            "fleet's other machines reach this one at, e.g. --address 10.0.0.5"
        ) from None


def _labels(pairs: list[str]) -> dict[str, str]:
    """Raises: DockyardError naming a pair without '='."""
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise DockyardError(f"--label {bad[0]!r}: write KEY=VALUE, e.g. --label gpu=l4")
    return dict(p.split("=", 1) for p in pairs)


def _registered(host: Host) -> str:
    gpus = f", {host.gpus} x {host.gpu_kind or 'GPU'}" if host.gpus else ", no GPUs"
    return (
        f"host {host.name} ({host.address}) in the fleet: {host.vcpus} vCPUs, {host.memory_bytes / GIB:.1f} GiB"
        f"{gpus}, {host.disk_free_bytes / GIB:.0f} GiB disk free; a heartbeat every {HEARTBEAT_SECONDS:g} s"
    )


def _beat(fleet: Fleet, host: Host, settings: Settings, stop: threading.Event) -> None:
    """Beat while this machine can run jobs: a host whose engine does not answer goes silent,
    and takes no new instances, until it answers again."""
    silent = False
    while not stop.wait(HEARTBEAT_SECONDS):
        if not docker_engine.answers():
            if not silent:
                say(f"the Docker engine does not answer: host {host.name} stops beating until it does")
            silent = True
            continue
        try:
            if not fleet.heartbeat(host.name, disk_free(settings.scratch_root())):
                fleet.register(host)  # removed meanwhile: back with its capacity
            if silent:
                say(f"the Docker engine answers again: host {host.name} beats again")
            silent = False
        except Exception as exc:  # noqa: BLE001 - a missed beat is tried again at the next
            say(f"heartbeat of host {host.name} missed ({type(exc).__name__}: {exc}); trying again")
        try:  # warm pools past their period end; the folders of those ended here leave the disk
            sweep(fleet.store, settings)
        except Exception as exc:  # noqa: BLE001 - swept again at the next beat
            say(f"ending the warm pools of host {host.name} failed ({type(exc).__name__}: {exc}); trying again")


PR_SET_PDEATHSIG = 1  # prctl(2)


def _dying_with(parent: int) -> Callable[[], None]:
    """What the Prefect worker's process runs before it starts: end when this command ends,
    however it ends (a SIGKILL included), so that no worker takes flow runs for a host that
    no longer beats. libc is loaded here, before the fork: the child only calls into it."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it ended before the line above
            os._exit(1)

    return die_with_parent


def _end(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker's process group at once, then wait for each (SIGKILL after the grace)."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            prefect_api.end_group(worker.pid, prefect_api.STOP_GRACE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the next one is ended all the same
            say(f"could not end Prefect worker {worker.pid}: {exc}")


def _prefect_worker(pool: str, limit: int, name: str, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        prefect_api.worker_command(pool, limit, name, (queue,)),
        env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_dying_with(os.getpid()),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env(os.environ)
    try:
        store = open_store(settings)
        fleet = Fleet(store)
        machine = this_machine(_name(args.name), _address(args.address), _labels(args.label), settings.scratch_root())
        use_prefect(str(settings.home))
        prefect_api.ensure_deployments(settings.work_pool, say)
        prefect_api.ensure_work_queue(settings.work_pool, machine.name)
        host = fleet.register(machine)  # last: a host in the fleet can be handed work at once
        say(_registered(host))
        if not host.reachable():
            say(
                f"host {host.name} is registered at {host.address}, which the fleet's other machines cannot reach: "
                "no job's instances are spread onto it — give --address"
            )
        if store.sqlite:
            say(
                f"the fleet's records are in this home's SQLite ({redacted(store.url)}): only this machine sees "
                "them — set DOCKYARD_DATABASE_URL to the fleet's PostgreSQL on every machine"
            )
    except DockyardError as exc:
        say(str(exc))
        return 1
    env = {**prefect_api.worker_environment(), "DOCKYARD_FLEET_HOST": host.name}
    # Two Prefect workers, each with its own flow-run slots: the host's own queue holds what was
    # placed here (jobs handed over with their room granted, parts of jobs spanning hosts); the
    # default queue, new jobs, which may wait Pending for room. One worker for both would let
    # waiting jobs fill every slot while a job granted room here waits for one: a deadlock.
    workers = [  # before this process starts threads of its own: preexec_fn runs in a fork
        _prefect_worker(settings.work_pool, args.jobs, f"dockyard-{host.name}{suffix}", queue, env)
        for suffix, queue in (("", host.name), ("-new", "default"))
    ]
    stop = threading.Event()
    threading.Thread(target=_beat, args=(fleet, host, settings, stop), name="heartbeat", daemon=True).start()
    ctx = Context(settings, store)
    threading.Thread(target=recovery.watch, args=(ctx, stop), name="recovery", daemon=True).start()
    say(
        f"worker: Prefect process workers on work pool '{settings.work_pool}' (pids "
        f"{', '.join(str(w.pid) for w in workers)}), {args.jobs} flow runs at once from host {host.name}'s own "
        f"queue (the jobs placed here) and {args.jobs} from the pool's default queue (new jobs)"
    )
    try:
        while all(w.poll() is None for w in workers):
            time.sleep(0.5)
        ended = next(w for w in workers if w.returncode is not None)
        say(f"a Prefect worker of host {host.name} ended (exit code {ended.returncode}): stopping the other")
        return 1  # a supervisor's restart-on-failure brings the host back
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (use_prefect makes it one)
        say(f"stopping the workers of host {host.name} and their flow runs")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return 0
    finally:
        stop.set()
        _end(list(reversed(workers)))  # the default queue's first: it takes no new job meanwhile


if __name__ == "__main__":
    sys.exit(main())
