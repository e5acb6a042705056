"""Which failures are worth retrying, and the retry policy every task uses.

Retries go through `retry_if_transient`, never a bare `retries=N`: spec
errors and user-code failures are final; throttling, 5xx and lost
connections are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dockyard.errors import DockyardError, TransientInfraError
from dockyard.settings import Settings
from infra import job_log

log = logging.getLogger("dockyard.retry")
T = TypeVar("T")

_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}


def is_transient(exc: BaseException) -> bool:
    """True for an infrastructure hiccup that the same call may survive."""
    if isinstance(exc, TransientInfraError):
        return True
    if isinstance(exc, DockyardError):  # a spec error, a failure retrying will not fix, ...
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    # The job store's database: unreachable, restarting, locked, or its pool exhausted.
    if isinstance(exc, OperationalError | DisconnectionError | PoolTimeout):
        return True
    name = type(exc).__name__
    # botocore ClientError (and aiobotocore's) carry an error code and status.
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
    # docker.errors.APIError: 5xx from the engine; requests' connection errors; httpx's
    # HTTPStatusError (Prefect's client) carries the status on its response.
    status_code = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if isinstance(status_code, int):
        return status_code >= 500 or status_code == 429
    if name in {
        "ConnectionError",
        "ReadTimeout",
        "ConnectTimeout",
        "ChunkedEncodingError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ResponseStreamingError",
        "ConnectError",  # httpx (Prefect's client): refused, or the server restarting
        "ReadError",
        "RemoteProtocolError",
    }:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


def retry_if_transient(task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only transient infrastructure errors."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we classify whatever the task raised
        transient = is_transient(exc)
        if transient:
            _report_retry(
                f"{getattr(task, 'name', 'task')} hit a transient error ({type(exc).__name__}: {exc}); "
                "retrying with backoff"
            )
        return transient
    return False


def _report_retry(message: str) -> None:
    """To Prefect's run logger and, when the flow run is a job, the job's log."""
    from prefect import runtime
    from prefect.logging import get_run_logger

    try:
        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 - outside a run context: plain logging
        log.warning(message)
    home = Settings.from_env(os.environ).home
    name = runtime.flow_run.name  # a training flow run is named after its job
    if name and job_log.path(home, name).parent.is_dir():
        job_log.append(home, name, f"retry: {message}")


RETRIES = 4
# Exponential backoff: 2, 4, 8, 16 s, each stretched by up to ±50 % jitter.
RETRY_DELAYS = [2.0, 4.0, 8.0, 16.0]
RETRY_JITTER = 0.5


def task_retry_options() -> dict[str, Any]:
    """The retry keywords every lifecycle task passes to @task."""
    return {
        "retries": RETRIES,
        "retry_delay_seconds": RETRY_DELAYS,
        "retry_jitter_factor": RETRY_JITTER,
        "retry_condition_fn": retry_if_transient,
    }


def with_backoff(
    call: Callable[[], T],
    patience: float,
    first_delay: float,
    on_retry: Callable[[BaseException, float], None] = lambda _exc, _delay: None,
) -> T:
    """`call()`, called again after each transient error (see is_transient) with
    exponential backoff (`first_delay`, doubled up to 16 s, stretched by up to -50 %
    jitter) for as long as `patience` seconds allow, counted from the first error (a
    call may wait long on its own before failing); `on_retry(error, delay)` before
    each wait.

    Raises:
        Exception: the call's error, at once when retrying cannot help, else the last one.
    """
    deadline: float | None = None
    delay = first_delay
    while True:
        try:
            return call()
        except Exception as exc:
            wait = delay * random.uniform(1 - RETRY_JITTER, 1.0)
            deadline = deadline or time.monotonic() + patience
            if not is_transient(exc) or time.monotonic() + wait > deadline:
                raise
            on_retry(exc, wait)
            time.sleep(wait)
            delay = min(delay * 2, 16.0)
