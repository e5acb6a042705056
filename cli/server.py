"""`dockyard server status|stop`: the local Prefect server that dockyard starts
once per DOCKYARD_HOME (when PREFECT_API_URL is unset) and leaves running for
the runs that follow, and the Prefect worker `dockyard serve` starts beside it."""

from __future__ import annotations

import argparse
from typing import Any

from cli.render import say
from dockyard.settings import Settings
from infra import prefect_api

NOT_RUNNING = 3  # `dockyard server status`'s exit code when no server runs


def add_verbs(sub: Any) -> None:
    """The server sub-commands, on `dockyard`'s parser."""
    server = sub.add_parser("server", help="the local Prefect server (and serve's worker) of DOCKYARD_HOME")
    verbs = server.add_subparsers(dest="verb", required=True)
    verbs.add_parser("status", help="its URL, pid, memory and health, and the worker's; exit code 3 when none runs")
    verbs.add_parser(
        "stop", help="stop the worker (interrupting its jobs) and the server; the next run or serve starts them"
    )


def status(settings: Settings) -> int:
    """Print this home's server (and worker); 0 when the server runs, 3 when it does not."""
    home = str(settings.home)
    worker = prefect_api.local_worker(home)
    if worker is not None:
        print(f"worker:  pid {worker.pid}, work pool '{worker.pool}', at most {worker.limit} flow runs at once")
        print(f"         log {worker.log}")
    found = prefect_api.local_server(home)
    if found is None:
        say(f"no local Prefect server runs for {home} (the next run without PREFECT_API_URL starts one)")
        return NOT_RUNNING
    print(f"url:     {found.url}")
    print(f"pid:     {found.pid}")
    print(f"home:    {home}")
    print(f"memory:  {prefect_api.memory_bytes(found) / 2**20:.0f} MB")
    print(f"healthy: {'yes' if prefect_api.healthy(found) else 'no (starting, or not answering)'}")
    if settings.prefect_api_url and settings.prefect_api_url != found.url:
        say(f"PREFECT_API_URL is set: runs report to {settings.prefect_api_url}, not to this server")
    return 0


def stop(settings: Settings) -> int:
    """Stop this home's worker and server and wait until their processes are gone; 0 either way."""
    home = str(settings.home)
    worker = prefect_api.stop_worker(home)
    if worker is not None:
        say(f"stopped the Prefect worker of {home} (pid {worker.pid}, work pool '{worker.pool}')")
    stopped = prefect_api.stop_server(home)
    if stopped is None:
        say(f"no local Prefect server was running for {home}; nothing to stop")
    else:
        say(f"stopped the local Prefect server of {home} (pid {stopped.pid}, {stopped.url}); the next run starts it")
    return 0


def server(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `dockyard server` verb."""
    return status(settings) if args.verb == "status" else stop(settings)
