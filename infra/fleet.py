"""The fleet in the job store: hosts, their heartbeats, and the instances granted on them.

`dockyard worker` registers its machine and beats; a job's instances are
granted capacity here before they are made (tasks/recover.py). A grant is
compare-and-set: it is written only if none of its hosts took another grant
since the fleet was read (each host row's version), so two schedulers, in one
process or on two machines, never hand out the same GPU or the same vCPUs.
Every grant and release is kept in fleet_grant_history, which is how that is
checked.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import struct
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from dockyard.errors import DockyardError
from dockyard.fleet import Demand, Grant, Host, Part, Shortfall, place
from dockyard.outcome import HostExit
from infra import docker_engine, prefect_api
from infra.job_store import WRITE_ATTEMPTS, JobStore, now
from infra.store_schema import grant_history, grants, hosts, parts


class UnknownHost(DockyardError):
    """No host of that name is registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) or "none yet"
        super().__init__(
            f"no host named {name!r} in the fleet (registered: {listed}) — `dockyard hosts` lists them; "
            "`dockyard worker` on a machine registers it"
        )


def gpu_kind() -> str:
    """The GPUs' model name as the NVIDIA driver reports it ("" without one)."""
    if shutil.which("nvidia-smi") is None:
        return ""
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return ""
    return ", ".join(sorted({n.strip() for n in names if n.strip()}))


def own_address() -> str:
    """The address this machine's peers reach it at: that of its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def interface_of(address: str) -> str:
    """The name of this machine's network interface that holds `address` ("" if none does)."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:  # SIOCGIFADDR: the interface's IPv4 address
                answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address
        if socket.inet_ntoa(answer[20:24]) == address:
            return name
    return ""


def disk_free(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


def this_machine(name: str, address: str | None, labels: dict[str, str], scratch: Path) -> Host:
    """This machine as a fleet host: its engine's CPUs, memory and GPUs, and the free disk under `scratch`."""
    facts = docker_engine.host_facts()
    return Host(
        name=name, address=address or own_address(), vcpus=facts.cpus, memory_bytes=facts.memory_bytes,
        gpus=facts.gpus, gpu_kind=gpu_kind() if facts.gpus else "", disk_free_bytes=disk_free(scratch), labels=labels,
    )  # fmt: skip


class _Moved(Exception):
    """A host took another grant while this one was being decided."""


def _host(row: Any) -> Host:
    return Host(
        name=row.name, address=row.address, vcpus=row.vcpus, memory_bytes=row.memory_bytes, gpus=row.gpus,
        gpu_kind=row.gpu_kind, disk_free_bytes=row.disk_free_bytes, labels=json.loads(row.labels),
        draining=bool(row.draining), heartbeat_at=row.heartbeat_at,
    )  # fmt: skip


def _grant(row: Any) -> Grant:
    ids = tuple(int(i) for i in row.gpu_ids.split(",") if i)
    return Grant(
        job_name=row.job_name, instance=row.instance, host=row.host, vcpus=row.vcpus,
        memory_bytes=row.memory_bytes, gpu_ids=ids,
    )  # fmt: skip


def _part(row: Any) -> Part:
    exits = None if row.exits is None else tuple(HostExit.model_validate(e) for e in json.loads(row.exits))
    return Part(
        job_name=row.job_name, attempt=row.attempt, host=row.host, instances=tuple(row.instances.split(",")),
        flow_run_id=row.flow_run_id, stop_grace=row.stop_grace, exits=exits,
    )  # fmt: skip


def _columns(grant: Grant) -> dict[str, Any]:
    return {
        "job_name": grant.job_name, "instance": grant.instance, "host": grant.host, "vcpus": grant.vcpus,
        "memory_bytes": grant.memory_bytes, "gpu_ids": ",".join(str(i) for i in grant.gpu_ids),
    }  # fmt: skip


class Fleet:
    """The fleet's records in one job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    # -- hosts ------------------------------------------------------------------

    def register(self, host: Host) -> Host:
        """Add a host, or bring a known one's capacity up to date (its draining flag is kept); it is live from now."""
        at = now()
        values = {
            "address": host.address, "vcpus": host.vcpus, "memory_bytes": host.memory_bytes, "gpus": host.gpus,
            "gpu_kind": host.gpu_kind, "disk_free_bytes": host.disk_free_bytes,
            "labels": json.dumps(host.labels, sort_keys=True), "heartbeat_at": at,
        }  # fmt: skip
        for _ in range(WRITE_ATTEMPTS):
            with self.store.writing() as conn:
                if conn.execute(update(hosts).where(hosts.c.name == host.name).values(
                    version=hosts.c.version + 1, **values
                )).rowcount:  # fmt: skip
                    return self.host(host.name, conn)
                try:
                    with conn.begin_nested():
                        conn.execute(insert(hosts).values(
                            name=host.name, draining=host.draining, registered_at=at, version=0, **values
                        ))  # fmt: skip
                except IntegrityError:
                    continue  # registered by another process meanwhile: update it
                return self.host(host.name, conn)
        raise DockyardError(f"could not register host {host.name}: its record kept changing")

    def heartbeat(self, name: str, disk_free_bytes: int | None = None) -> bool:
        """The host's worker is alive; False when the host is no longer registered."""
        values: dict[str, Any] = {"heartbeat_at": now()}
        if disk_free_bytes is not None:
            values["disk_free_bytes"] = disk_free_bytes
        with self.store.writing() as conn:
            return bool(conn.execute(update(hosts).where(hosts.c.name == name).values(**values)).rowcount)

    def hosts(self) -> list[Host]:
        with self.store.engine.connect() as conn:
            return [_host(row) for row in conn.execute(select(hosts).order_by(hosts.c.name))]

    def host(self, name: str, conn: Connection | None = None) -> Host:
        """Raises: UnknownHost."""
        if conn is None:
            with self.store.engine.connect() as own:
                return self.host(name, own)
        row = conn.execute(select(hosts).where(hosts.c.name == name)).first()
        if row is None:
            known = list(conn.execute(select(hosts.c.name).order_by(hosts.c.name)).scalars())
            raise UnknownHost(name, known)
        return _host(row)

    def drain(self, name: str, draining: bool = True) -> Host:
        """Stop (or resume) placing new instances on the host; what runs there runs on.

        Raises:
            UnknownHost: no host of that name.
        """
        with self.store.writing() as conn:
            conn.execute(
                update(hosts).where(hosts.c.name == name).values(draining=draining, version=hosts.c.version + 1)
            )
            return self.host(name, conn)

    def remove(self, name: str) -> Host:
        """Take a host out of the fleet (a machine gone for good); a worker started there again
        registers it anew.

        Raises:
            UnknownHost: no host of that name.
            DockyardError: jobs hold grants on it.
        """
        with self.store.writing() as conn:
            host = self.host(name, conn)
            holders = sorted(set(conn.execute(select(grants.c.job_name).where(grants.c.host == name)).scalars()))
            if holders:
                raise DockyardError(
                    f"host {name} holds instances of {', '.join(holders)}: stop those jobs first, or wait until "
                    "they end (`dockyard hosts drain` keeps new ones away, and ends the warm pools kept there)"
                )
            conn.execute(delete(hosts).where(hosts.c.name == name))
        return host

    # -- grants -----------------------------------------------------------------

    def grants(self, job_name: str | None = None, host: str | None = None) -> list[Grant]:
        query = select(grants).order_by(grants.c.host, grants.c.job_name, grants.c.instance)
        if job_name is not None:
            query = query.where(grants.c.job_name == job_name)
        if host is not None:
            query = query.where(grants.c.host == host)
        with self.store.engine.connect() as conn:
            return [_grant(row) for row in conn.execute(query)]

    def grant(
        self, demand: Demand, only: str | None = None, prefer: str | None = None, avoid: str | None = None
    ) -> list[Grant] | Shortfall:
        """Room for every instance of `demand` on one host (see dockyard.fleet.place), taken for it;
        or why there is none now. A job granted before gets its grants back (a retried step), unless
        their host went silent or left the fleet: those are given back, and the job placed afresh.
        `avoid` names a host taken for silent whatever its heartbeat says (its engine is known gone)."""
        for _ in range(WRITE_ATTEMPTS):
            with self.store.engine.connect() as conn, conn.begin():
                rows = list(conn.execute(select(hosts).order_by(hosts.c.name)))
                held = [_grant(row) for row in conn.execute(select(grants))]
            fleet = [_host(row) for row in rows]
            fleet = [h.model_copy(update={"heartbeat_at": None}) if h.name == avoid else h for h in fleet]
            at = now()
            mine = sorted((g for g in held if g.job_name == demand.job_name), key=lambda g: g.number)
            live = {h.name for h in fleet if h.live(at)}
            if mine and {g.host for g in mine} <= live:
                return mine
            if mine:
                self.release(demand.job_name)
                held = [g for g in held if g.job_name != demand.job_name]
            decision = place(demand, fleet, held, at, only=only, prefer=prefer)
            if isinstance(decision, Shortfall):
                return decision
            try:
                self._take(decision, {row.name: row.version for row in rows})
            except (_Moved, IntegrityError):
                continue  # the fleet changed under this decision: decide again
            return decision
        raise DockyardError(
            f"could not place {demand.job_name}: the fleet's grants kept changing — retry; if it keeps "
            "happening, fewer schedulers at once"
        )

    def _take(self, decision: list[Grant], versions: dict[str, int]) -> None:
        at = now()
        with self.store.writing() as conn:
            for name in sorted({g.host for g in decision}):
                if not conn.execute(
                    update(hosts)
                    .where(hosts.c.name == name, hosts.c.version == versions[name])
                    .values(version=versions[name] + 1)
                ).rowcount:
                    raise _Moved(name)
            conn.execute(insert(grants), [{**_columns(g), "granted_at": at} for g in decision])
            conn.execute(insert(grant_history), [{**_columns(g), "at": at, "event": "grant"} for g in decision])

    def release(self, job_name: str) -> list[Grant]:
        """Give back every instance the job holds; returns what it held."""
        with self.store.writing() as conn:
            held = [_grant(row) for row in conn.execute(select(grants).where(grants.c.job_name == job_name))]
            if held:
                conn.execute(delete(grants).where(grants.c.job_name == job_name))
                at = now()
                conn.execute(insert(grant_history), [{**_columns(g), "at": at, "event": "release"} for g in held])
        return held

    def hand_on(self, job_name: str, to: str) -> list[Grant]:
        """Move what job `job_name` holds to job `to` (a warm pool taken over), as one release and
        one grant of the same room; returns what `to` holds now."""
        at = now()
        with self.store.writing() as conn:
            held = [_grant(row) for row in conn.execute(select(grants).where(grants.c.job_name == job_name))]
            moved = [g.model_copy(update={"job_name": to}) for g in held]
            if held:
                conn.execute(delete(grants).where(grants.c.job_name == job_name))
                conn.execute(insert(grants), [{**_columns(g), "granted_at": at} for g in moved])
                conn.execute(insert(grant_history), [{**_columns(g), "at": at, "event": "release"} for g in held])
                conn.execute(insert(grant_history), [{**_columns(g), "at": at, "event": "grant"} for g in moved])
        return moved

    def history(self) -> list[tuple[datetime, str, Grant]]:
        """Every grant and release, oldest first."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(grant_history).order_by(grant_history.c.id))
            return [(row.at, row.event, _grant(row)) for row in rows]

    # -- parts: a job's instances on hosts other than its orchestrator's ------------

    def add_part(self, part: Part) -> Part:
        """Record a part handed to its host's worker; a retried hand-over finds the first one's."""
        with self.store.writing() as conn:
            row = conn.execute(select(parts).where(*self._is(part.job_name, part.attempt, part.host))).first()
            if row is not None:
                return _part(row)
            conn.execute(insert(parts).values(
                job_name=part.job_name, attempt=part.attempt, host=part.host, instances=",".join(part.instances),
                flow_run_id=part.flow_run_id,
            ))  # fmt: skip
        return part

    def parts(self, job_name: str, attempt: int | None = None) -> list[Part]:
        """The job's parts of one attempt (None: of every attempt)."""
        query = select(parts).where(parts.c.job_name == job_name)
        if attempt is not None:
            query = query.where(parts.c.attempt == attempt)
        with self.store.engine.connect() as conn:
            return [_part(row) for row in conn.execute(query.order_by(parts.c.host))]

    def part(self, job_name: str, attempt: int, host: str) -> Part | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(parts).where(*self._is(job_name, attempt, host))).first()
        return None if row is None else _part(row)

    def stop_parts(self, job_name: str, attempt: int | None, grace: float) -> None:
        """Ask every part of the attempt (None: of every attempt) to stop its containers: SIGTERM,
        SIGKILL after `grace` seconds."""
        query = update(parts).where(parts.c.job_name == job_name, parts.c.stop_grace.is_(None))
        if attempt is not None:
            query = query.where(parts.c.attempt == attempt)
        with self.store.writing() as conn:
            conn.execute(query.values(stop_grace=grace))

    def report_part(self, job_name: str, attempt: int, host: str, exits: list[HostExit]) -> None:
        """How the part's instances ended (its orchestrator waits for this)."""
        text = json.dumps([e.model_dump(mode="json") for e in exits])
        with self.store.writing() as conn:
            conn.execute(update(parts).where(*self._is(job_name, attempt, host)).values(exits=text))

    def cancel_unstarted(self, part: Part) -> bool:
        """Cancel a part's flow run that no worker has started, recording that it ran nothing;
        True if it was cancelled."""
        try:
            cancelled = prefect_api.cancel_if_waiting(part.flow_run_id, "its attempt is over before it started")
        except Exception:  # noqa: BLE001 - an unreachable API: the part, when it starts, sees its attempt is over
            return False
        if cancelled:
            self.report_part(part.job_name, part.attempt, part.host, [])
        return cancelled

    def await_earlier_parts(self, job_name: str, attempt: int, host: str, patience: float) -> None:
        """Wait until the parts of the job's attempts before `attempt` on `host` have cleaned up (a
        part removes the job's objects on its host before it reports), for at most `patience` seconds."""
        deadline = time.monotonic() + patience
        for earlier in range(1, attempt):
            part = self.part(job_name, earlier, host)
            if part is not None and part.exits is None:
                self.await_report(part, deadline)

    def await_report(self, part: Part, deadline: float) -> bool:
        """Wait until `part` reports (True), or give up on it (False) at `deadline` (monotonic), when
        its host is silent or gone, or when its flow run never started (then cancelled) or ended
        without a report; a part given up on is recorded as having reported nothing, so that no
        one waits for it again."""
        while (now_part := self.part(part.job_name, part.attempt, part.host)) is not None and now_part.exits is None:
            try:
                live = self.host(part.host).live(now())
            except UnknownHost:
                live = False
            if self.cancel_unstarted(part):
                return False
            try:
                ended = prefect_api.run_ended(part.flow_run_id)
            except Exception:  # noqa: BLE001 - an unreachable API: the other signs decide
                ended = False
            if ended or not live or time.monotonic() > deadline:
                self.report_part(part.job_name, part.attempt, part.host, [])
                return False
            time.sleep(0.5)
        return True

    @staticmethod
    def _is(job_name: str, attempt: int, host: str) -> tuple[Any, ...]:
        return (parts.c.job_name == job_name, parts.c.attempt == attempt, parts.c.host == host)
