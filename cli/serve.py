"""`dockyard serve`: SageMaker's API (and CloudWatch Logs' reads) for your SageMaker code, on one port.

    dockyard serve [--host 127.0.0.1] [--port 8900] [--no-worker] [--jobs N]

Creates the Prefect work pool and the train and tune deployments jobs are
submitted to, and (unless --no-worker) starts a Prefect process worker for
this machine, so that one command is enough on one box. The endpoint keeps no
job state, and the worker outlives it: restart it, or run several, while jobs
run. `dockyard server stop` stops the worker with the local Prefect server.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import threading

import uvicorn
import yaml

from api import recovery
from api.app import create_app
from api.auth import Principal, load_principals
from api.training import Context
from cli.render import say
from cli.session import use_prefect
from dockyard.errors import DockyardError
from dockyard.settings import Settings
from infra import prefect_api
from infra.job_store import open_store


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
        prefect_api.ensure_deployments(settings.work_pool, say)
    except DockyardError as exc:
        say(str(exc))
        return 1
    if not args.no_worker:
        worker = prefect_api.local_worker(str(settings.home))
        if worker is None:
            worker = prefect_api.start_worker(str(settings.home), settings.work_pool, args.jobs)
            started = "started"
        else:
            started = "already running"
        say(
            f"worker: a Prefect process worker on work pool '{worker.pool}', {worker.limit} flow runs at once, "
            f"{started} (pid {worker.pid}; log {worker.log}); it outlives this server, so jobs run on through a "
            "restart — `dockyard server stop` stops it"
        )
    # The endpoint's own lines (each call, each refusal) beside uvicorn's, on stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("dockyard")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    url = f"http://{args.host}:{args.port}"
    say(f"SageMaker API at {url}: set AWS_ENDPOINT_URL_SAGEMAKER={url} and AWS_ENDPOINT_URL_CLOUDWATCH_LOGS={url}")
    ctx = Context(settings, store)
    stop = threading.Event()
    threading.Thread(target=recovery.watch, args=(ctx, stop), name="recovery", daemon=True).start()
    try:
        uvicorn.run(create_app(ctx, principals), host=args.host, port=args.port, log_level="info")
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
