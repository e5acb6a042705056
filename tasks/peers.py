"""A job whose instances span machines, as its orchestrator sees it: the
instances on other fleet hosts are handed to those hosts' workers, one part
per host (flows/instances.py runs it; tasks/part.py), and watched through the
job store.

The orchestrator runs on algo-1's host. Each part makes, stages, runs and
watches its own instances, syncs their checkpoints, and when they have ended
uploads what they left in /opt/ml/model and /opt/ml/output/data (for
persist to merge) and reports how they ended. The orchestrator asks the parts
to stop through the store too. A part whose host stays silent for
monitor_lost_contact_seconds, or whose flow run ends without a report, is an
infrastructure fault, as a lost engine is.
"""

from __future__ import annotations

import logging
import time

from prefect import task
from prefect.cache_policies import NONE

from dockyard.errors import InfraError, TransientInfraError
from dockyard.fleet import Part
from dockyard.outcome import HostExit
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from infra import job_log, prefect_api
from infra.fleet import Fleet
from infra.job_store import now, open_store
from infra.retry import task_retry_options
from tasks.provision import ProvisionPlan

PART_FLOW = "instances"
# A part's exit codes for instances it could not run; the failure text says why.
NOT_STARTED = -1  # for good (a missing image, a spec this host cannot run)
NOT_STARTED_TRANSIENT = -2  # for now (an engine or registry hiccup): the job's retry strategy applies
PIPE_BROKEN = -3  # a Pipe channel could not send an epoch whole: a client error, as on one machine
RUN_CHECK_SECONDS = 5.0  # how often to ask Prefect whether a part's flow run is still going
STOP_PATIENCE = 300.0  # past the stop grace, how long a stopped part may take to sync, upload and report
START_PATIENCE = 120.0  # how long a part's flow run may wait for its worker before the log says so


@task(name="start-parts", cache_policy=NONE, **task_retry_options())
def start_parts(spec: TrainingJobSpec, plan: ProvisionPlan, settings: Settings) -> tuple[Part, ...]:
    """Hand the instances granted on other fleet hosts to those hosts' workers; returns the parts."""
    name = spec.training_job_name
    fleet = Fleet(open_store(settings))
    attempt = len(open_store(settings).get(name).attempts)
    parts = []
    for machine in plan.machines():
        if machine == settings.fleet_host:
            continue
        instances = tuple(h.host for h in plan.hosts if h.machine == machine)
        flow_run_id = prefect_api.submit(
            PART_FLOW, settings.work_pool, {"job": spec.model_dump(mode="json"), "attempt": attempt},
            f"{name}-{machine}", ["dockyard"], work_queue=machine,
            idempotency_key=f"part/{name}/{attempt}/{machine}",  # a retry of this task: the same run
        )  # fmt: skip
        part = fleet.add_part(
            Part(job_name=name, attempt=attempt, host=machine, instances=instances, flow_run_id=flow_run_id)
        )
        parts.append(part)
        handed = f"{', '.join(instances)} on host {machine}: handed to its worker (flow run {flow_run_id})"
        job_log.report(settings.home, name, handed)
    return tuple(parts)


class Peers:
    """The parts of one attempt, read from the job store."""

    def __init__(self, settings: Settings, parts: tuple[Part, ...]) -> None:
        self.settings, self.parts = settings, parts
        self._fleet: Fleet | None = None
        self.stopping = False
        self.stop_deadline = 0.0  # monotonic: past it, a stopped part that has not reported is given up on
        self.silent_since: dict[str, float] = {}  # host -> when (monotonic) it was first seen silent
        self.next_run_check = time.monotonic() + RUN_CHECK_SECONDS
        self.started_at = time.monotonic()
        self.said_waiting: set[str] = set()
        self.seen: list[Part] = []  # the parts as running() last read them: one read a poll

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            self._fleet = Fleet(open_store(self.settings))
        return self._fleet

    def _now(self) -> list[Part]:
        """The parts as the store has them now; kept as `seen` for the rest of this poll."""
        if not self.parts:
            return []
        first = self.parts[0]
        self.seen = self.fleet.parts(first.job_name, first.attempt)
        return self.seen

    def running(self) -> list[str]:
        """The instances whose part has not reported how they ended.

        Raises:
            TransientInfraError: a part's host stayed silent for monitor_lost_contact_seconds (its
                worker or machine is gone), or its flow run ended without a report (it crashed).
        """
        waiting = [p for p in self._now() if p.exits is None]
        at, clock = now(), time.monotonic()
        for part in waiting:
            if self.fleet.host(part.host).live(at):
                self.silent_since.pop(part.host, None)
                continue
            since = self.silent_since.setdefault(part.host, clock)
            if clock - since > self.settings.monitor_lost_contact_seconds:
                raise TransientInfraError(
                    f"host {part.host}, which ran {', '.join(part.instances)}, has sent no heartbeat for "
                    f"{clock - since:.0f} s: is `dockyard worker` running there? The job restarts from its "
                    "checkpoints within its retry_strategy"
                )
        if waiting and self.stopping and clock > self.stop_deadline:
            raise TransientInfraError(
                f"host {waiting[0].host} has not reported how {', '.join(waiting[0].instances)} ended, "
                f"{STOP_PATIENCE:.0f} s past the stop grace: see its flow run {waiting[0].flow_run_id} in Prefect"
            )
        if waiting and clock >= self.next_run_check:
            self.next_run_check = clock + RUN_CHECK_SECONDS
            self._check_runs(waiting, clock)
        return [i for p in waiting for i in p.instances]

    def _check_runs(self, waiting: list[Part], clock: float) -> None:
        for part in waiting:
            try:
                ended = prefect_api.run_ended(part.flow_run_id)
                unstarted = not ended and prefect_api.run_waiting(part.flow_run_id)
            except Exception:  # noqa: BLE001 - an unreachable Prefect API is no reason to end the job
                return
            now_part = self.fleet.part(part.job_name, part.attempt, part.host)
            if ended and (now_part is None or now_part.exits is None):  # it did not report before it ended
                raise TransientInfraError(
                    f"the part of the job on host {part.host} ({', '.join(part.instances)}) ended without "
                    f"reporting how its instances ended: see its flow run {part.flow_run_id} in Prefect"
                )
            if unstarted and clock - self.started_at > START_PATIENCE and part.host not in self.said_waiting:
                self.said_waiting.add(part.host)
                job_log.report(
                    self.settings.home,
                    part.job_name,
                    f"{', '.join(part.instances)} on host {part.host} have waited {START_PATIENCE:.0f} s for its "
                    "worker to take them: its flow-run slots may all be busy (raise `dockyard worker --jobs` there)",
                    logging.WARNING,
                )

    def failed(self) -> bool:
        """Whether a part reported a failed instance, as running() last read them."""
        return any(e.exit_code != 0 for p in self.seen for e in (p.exits or ()))

    def stop(self, grace: float) -> None:
        """Ask every part to stop its instances (SIGTERM, SIGKILL after `grace` seconds); a part
        whose flow run has not started is cancelled."""
        if not self.parts or self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + grace + STOP_PATIENCE
        first = self.parts[0]
        self.fleet.stop_parts(first.job_name, first.attempt, grace)
        for part in self._now():
            if part.exits is None:
                self.fleet.cancel_unstarted(part)

    def exits(self) -> list[HostExit]:
        return [e for p in self._now() for e in (p.exits or ())]

    def broken_pipe(self) -> str | None:
        """Why a part's Pipe channel could not be streamed, if one could not (as running() last read them)."""
        reported = (e for p in self.seen for e in (p.exits or ()))
        return next((e.failure_text or "" for e in reported if e.exit_code == PIPE_BROKEN), None)

    def not_started(self) -> None:
        """Raises: TransientInfraError or InfraError, when a part could not run its instances
        (for now or for good; the first such says why)."""
        for e in self.exits():
            if e.exit_code == NOT_STARTED_TRANSIENT:
                raise TransientInfraError(e.failure_text or f"{e.host} could not be started")
            if e.exit_code == NOT_STARTED:
                raise InfraError(e.failure_text or f"{e.host} could not be started")
