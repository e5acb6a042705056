"""`dockyard serve` creating its deployments while the Prefect server is busy.

A 503 from an overloaded Prefect server cannot be caused on demand, so the
failing call is replaced by one that fails the way Prefect's client does."""

from __future__ import annotations

import httpx
import pytest

from dockyard.errors import InfraError
from infra import prefect_api, retry


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/deployments/")
    return httpx.HTTPStatusError("busy", request=request, response=httpx.Response(code, request=request))


def test_a_busy_server_is_retried_until_the_deployments_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    failures = [_status_error(503), httpx.ConnectError("refused")]

    def create(_work_pool: str) -> None:
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(prefect_api, "_create_deployments", create)
    monkeypatch.setattr(retry.time, "sleep", lambda _: None)
    said: list[str] = []
    prefect_api.ensure_deployments("dockyard", said.append)
    assert not failures
    assert len(said) == 2 and all("Prefect API busy" in line for line in said)


def test_a_refusal_is_not_retried_and_names_the_work_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def create(work_pool: str) -> None:
        calls.append(work_pool)
        raise _status_error(422)

    monkeypatch.setattr(prefect_api, "_create_deployments", create)
    with pytest.raises(InfraError, match=r"work pool 'dockyard'.*dockyard server status"):
        prefect_api.ensure_deployments("dockyard", print)
    assert calls == ["dockyard"]


def test_a_server_that_stays_busy_fails_once_patience_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def create(_work_pool: str) -> None:
        raise _status_error(503)

    monkeypatch.setattr(prefect_api, "_create_deployments", create)
    with pytest.raises(InfraError, match="HTTPStatusError"):
        prefect_api.ensure_deployments("dockyard", print, patience=0)
