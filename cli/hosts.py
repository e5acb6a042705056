"""`dockyard hosts`: the fleet's machines, what each offers and runs, and draining one.

    dockyard hosts [--json]           each host: capacity, free, jobs, last heartbeat
    dockyard hosts drain NAME         no new instances there; what runs there finishes
    dockyard hosts undrain NAME       take new instances again
    dockyard hosts remove NAME        forget a machine gone for good (none of its jobs may hold it)

A host is live while its worker beats, silent once it has missed three beats.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from cli.render import say
from dockyard.fleet import Grant, Host, free_capacity
from dockyard.settings import Settings
from dockyard.warm_pool import PoolStatus
from infra.fleet import Fleet
from infra.job_store import now, open_store
from tasks.warm_pool import end_pools_on

GIB = 1024**3


def add_verbs(sub: Any) -> None:
    """The hosts sub-commands, on `dockyard`'s parser."""
    hosts = sub.add_parser("hosts", help="the fleet's machines (`dockyard worker` registers them); drain one")
    hosts.add_argument("--json", action="store_true", help="the hosts as JSON")
    verbs = hosts.add_subparsers(dest="verb")
    verbs.add_parser("drain", help="place no new instances on a host; its running jobs finish").add_argument("name")
    verbs.add_parser("undrain", help="let a drained host take new instances again").add_argument("name")
    verbs.add_parser("remove", help="forget a machine gone for good (no job may hold it)").add_argument("name")


def _state(host: Host) -> str:
    if not host.live(now()):
        return "silent"
    return "draining" if host.draining else "live"


def _row(host: Host, grants: list[Grant], warm: set[str]) -> dict[str, Any]:
    free = free_capacity([host], grants)[host.name]
    beat = (now() - host.heartbeat_at).total_seconds() if host.heartbeat_at else None
    return {
        "Name": host.name,
        "Address": host.address,
        "State": _state(host),
        "VCpus": host.vcpus,
        "FreeVCpus": free.vcpus,
        "MemoryGiB": round(host.memory_bytes / GIB, 1),
        "FreeMemoryGiB": round(free.memory_bytes / GIB, 1),
        "Gpus": host.gpus,
        "FreeGpus": len(free.gpu_ids),
        "GpuKind": host.gpu_kind,
        "DiskFreeGiB": round(host.disk_free_bytes / GIB, 1),
        "Labels": host.labels,
        "Jobs": sorted({g.job_name for g in grants} - warm),
        "WarmPools": sorted({g.job_name for g in grants} & warm),  # ended jobs' instances, kept for the next
        "SecondsSinceHeartbeat": round(beat, 1) if beat is not None else None,
    }


def listing(fleet: Fleet, as_json: bool) -> int:
    held: dict[str, list[Grant]] = defaultdict(list)
    for grant in fleet.grants():
        held[grant.host].append(grant)
    warm = {p.job_name for p in fleet.store.pools(status=PoolStatus.AVAILABLE)}
    rows = [_row(h, held[h.name], warm) for h in fleet.hosts()]
    if as_json:
        print(json.dumps({"Hosts": rows}, indent=2))
        return 0
    if not rows:
        say("no hosts in the fleet yet: `dockyard worker` on a machine registers it")
        return 0
    print(f"{'NAME':<16} {'STATE':<9} {'vCPU free':>10} {'GiB free':>13} {'GPU free':>9}  {'BEAT':>6}  JOBS")
    for r in rows:
        gpus = f"{r['FreeGpus']}/{r['Gpus']}"
        beat = f"{r['SecondsSinceHeartbeat']:.0f}s" if r["SecondsSinceHeartbeat"] is not None else "-"
        print(
            f"{r['Name']:<16} {r['State']:<9} {r['FreeVCpus']:>4}/{r['VCpus']:<5} "
            f"{r['FreeMemoryGiB']:>6.1f}/{r['MemoryGiB']:<6.1f} {gpus:>9}  {beat:>6}  "
            + (", ".join(r["Jobs"] + [f"{name} (warm pool)" for name in r["WarmPools"]]) or "-")
        )
        details = [r["Address"], r["GpuKind"], f"{r['DiskFreeGiB']:.0f} GiB disk free"]
        details += [f"{k}={v}" for k, v in sorted(r["Labels"].items())]
        print(f"{'':<16} {'  '.join(d for d in details if d)}")
    return 0


def hosts(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `dockyard hosts` verb."""
    fleet = Fleet(open_store(settings))
    if args.verb is None:
        return listing(fleet, args.json)
    if args.verb == "remove":
        say(f"host {fleet.remove(args.name).name} is out of the fleet")
        return 0
    host = fleet.drain(args.name, draining=args.verb == "drain")
    if host.draining:
        ended = end_pools_on(fleet.store, settings, host.name)  # kept room for new jobs: none go there now
        if ended:
            say(f"ended the warm pools of {', '.join(ended)} on host {host.name}")
        running = sorted({g.job_name for g in fleet.grants(host=host.name)})
        say(f"host {host.name} is draining: no new instances go there; {len(running)} job(s) run on: "
            f"{', '.join(running) or 'none'}")  # fmt: skip
    else:
        say(f"host {host.name} takes new instances again")
    return 0
