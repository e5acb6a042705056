"""`dockyard serve`: SageMaker's API (and CloudWatch Logs' reads) for your SageMaker code, on one port.

    dockyard serve [--host 127.0.0.1] [--port 8900] [--no-worker] [--jobs N]

Creates the Prefect work pool and the train and tune deployments jobs are
submitted to, and (unless --no-worker) runs a Prefect process worker for this
machine beside the endpoint, so that one command is enough on one box. The
endpoint keeps no job state: restart it, or run several, while jobs run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn
import yaml

from api.app import create_app
from api.auth import Principal, load_principals
from api.training import Context
from cli.render import say
from cli.session import use_prefect
from dockyard.errors import DockyardError
from dockyard.settings import Settings
from infra import prefect_api
from infra.job_store import open_store

WORKER_QUERY_SECONDS = "1"  # how often the worker asks for new flow runs (Prefect's default: 10)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="port to listen on (default 8900)")
    parser.add_argument("--no-worker", action="store_true", help="accept requests only; workers run elsewhere")
    parser.add_argument(
        "--jobs",
        type=int,
        default=max(2, os.cpu_count() or 2),
        help="how many flow runs this machine's worker runs at once; the rest wait their turn (default: cores)",
    )
    return parser


def own_keys(settings: Settings) -> dict[str, Principal]:
    """With no keys configured: a key pair of this home's own, made once (file mode 0600)."""
    path = settings.home / "api-keys.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pair = {"name": "default", "access_key_id": "DY" + secrets.token_hex(9).upper(),
                "secret_access_key": secrets.token_urlsafe(30)}  # fmt: skip
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({"principals": [pair]}, f)
    return load_principals(settings.model_copy(update={"keys_file": str(path)}))


def start_worker(settings: Settings, limit: int) -> subprocess.Popen[bytes]:
    """A Prefect process worker on the work pool, its output in DOCKYARD_HOME/serve/worker.log."""
    log = settings.home / "serve" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).parent / "prefect"
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "")}
    env["PREFECT_WORKER_QUERY_SECONDS"] = env["PREFECT_WORKER_QUERY_SECONDS"] or WORKER_QUERY_SECONDS
    with open(log, "ab") as out:
        worker = subprocess.Popen(
            [str(prefect), "worker", "start", "--pool", settings.work_pool, "--type", "process", "--limit", str(limit)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    say(
        f"worker: a Prefect process worker on work pool '{settings.work_pool}', {limit} flow runs at once "
        f"(pid {worker.pid}; log {log})"
    )
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Stop the worker, not the jobs it started: their flow runs carry on to the end."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env(os.environ)
    try:
        principals = load_principals(settings)
        if not principals:
            principals = own_keys(settings)
            say(
                f"keys: none configured, so this home's own pair is in {settings.home / 'api-keys.yaml'} "
                f"(access key id {next(iter(principals))}); set DOCKYARD_ACCESS_KEY_ID and "
                "DOCKYARD_SECRET_ACCESS_KEY, or DOCKYARD_KEYS_FILE, to choose your own"
            )
        store = open_store(settings)
        use_prefect(str(settings.home))
        prefect_api.ensure_deployments(settings.work_pool)
    except DockyardError as exc:
        say(str(exc))
        return 1
    worker = None if args.no_worker else start_worker(settings, args.jobs)
    url = f"http://{args.host}:{args.port}"
    say(f"SageMaker API at {url}: set AWS_ENDPOINT_URL_SAGEMAKER={url} and AWS_ENDPOINT_URL_CLOUDWATCH_LOGS={url}")
    try:
        uvicorn.run(create_app(Context(settings, store), principals), host=args.host, port=args.port, log_level="info")
    finally:
        if worker is not None:
            stop_worker(worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
