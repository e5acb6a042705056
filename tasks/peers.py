"""A job whose instances span machines, as its orchestrator sees it: the
instances on other fleet hosts are handed to those hosts' workers, one part
per host (flows/instances.py runs it), and watched through the job store.

The orchestrator runs on algo-1's host. Each part makes, stages, runs and
watches its own instances, syncs their checkpoints, and when they have ended
uploads what they left in /opt/ml/model and /opt/ml/output/data (for
persist to merge) and reports how they ended. The orchestrator asks the parts
to stop through the store too; a part whose host goes silent is an
infrastructure fault, as a lost engine is.
"""

from __future__ import annotations

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
NOT_STARTED = -1  # a part's exit code for instances it could not start (its failure text says why)
REPORT_PATIENCE = 120.0  # how long past the stop grace a live host's part may take to report
RUN_CHECK_SECONDS = 5.0  # how often to ask Prefect whether a part's flow run is still going


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
        self.fleet = Fleet(open_store(settings))
        self.parts = parts
        self.stop_asked_at: float | None = None
        self.grace = 0.0
        self.next_run_check = time.monotonic() + RUN_CHECK_SECONDS

    def _now(self) -> list[Part]:
        if not self.parts:
            return []
        first = self.parts[0]
        return self.fleet.parts(first.job_name, first.attempt)

    def running(self) -> list[str]:
        """The instances whose part has not reported how they ended.

        Raises:
            TransientInfraError: a part's host went silent (its worker or machine is gone),
                or a stopped part did not report within the grace and REPORT_PATIENCE.
        """
        waiting = [p for p in self._now() if p.exits is None]
        at = now()
        for part in waiting:
            if not self.fleet.host(part.host).live(at):
                raise TransientInfraError(
                    f"host {part.host}, which ran {', '.join(part.instances)}, went silent "
                    "(no heartbeat from its worker)"
                )
        if waiting and time.monotonic() >= self.next_run_check:
            self.next_run_check = time.monotonic() + RUN_CHECK_SECONDS
            self._runs_alive(waiting)
        if waiting and self.stop_asked_at and time.monotonic() - self.stop_asked_at > self.grace + REPORT_PATIENCE:
            raise TransientInfraError(
                f"host {waiting[0].host} did not report how {', '.join(waiting[0].instances)} ended after being stopped"
            )
        return [i for p in waiting for i in p.instances]

    def _runs_alive(self, waiting: list[Part]) -> None:
        """Raises: TransientInfraError, when a part's flow run ended without reporting (it crashed)."""
        for part in waiting:
            try:
                ended = prefect_api.run_ended(part.flow_run_id)
            except Exception:  # noqa: BLE001 - an unreachable Prefect API is no reason to end the job
                return
            now_part = self.fleet.part(part.job_name, part.attempt, part.host)
            if ended and (now_part is None or now_part.exits is None):  # it did not report before it ended
                raise TransientInfraError(
                    f"the part of the job on host {part.host} ({', '.join(part.instances)}) ended "
                    f"(flow run {part.flow_run_id}) without reporting how its instances ended"
                )

    def failed(self) -> bool:
        return any(e.exit_code != 0 for e in self.exits())

    def stop(self, grace: float) -> None:
        if self.parts and self.stop_asked_at is None:
            self.stop_asked_at, self.grace = time.monotonic(), grace
            self.fleet.stop_parts(self.parts[0].job_name, self.parts[0].attempt, grace)

    def exits(self) -> list[HostExit]:
        return [e for p in self._now() for e in (p.exits or ())]

    def not_started(self) -> None:
        """Raises: InfraError, when a part could not start its instances (the first such says why)."""
        for e in self.exits():
            if e.exit_code == NOT_STARTED:
                raise InfraError(e.failure_text or f"{e.host} could not be started")
