"""The credentials endpoint: a job's containers get short-lived credentials for its role.

As ECS and SageMaker deliver them: the container's AWS SDK finds
AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN in its
environment and asks that URI, sending the token, for AccessKeyId,
SecretAccessKey, Token and Expiration; it asks again before they expire. The
SDKs take such a URI only on a loopback or link-local address (or over
HTTPS), so the endpoint listens on 169.254.170.2, the address ECS uses,
which the host must carry (`ip addr add 169.254.170.2/32 dev lo`; scripts/setup
does it). A container on its job's bridge network reaches it through its
gateway; an isolated job's network has no route to it, and gets no credentials.

Each orchestrator process serves its own jobs from one endpoint; a job's
token is random, of the job alone, and never written down. The credentials
come from STS AssumeRole at DOCKYARD_STS_ENDPOINT_URL, for the job's `role`,
narrowed by the job's session policy (dockyard/credentials.py), minted anew
when less than REFRESH_MARGIN is left of the ones in hand. Without STS, the
roles file (DOCKYARD_ROLES_FILE: `roles: {ROLE_ARN: AWS_PROFILE}`) maps a role
to a profile of this machine's AWS config, whose credentials are served as
they are.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from dockyard.credentials import session_policy
from dockyard.errors import DockyardError
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from infra import job_log

log = logging.getLogger("dockyard.credentials")

SESSION_SECONDS = 3600  # STS's default most for a role session
SHORTEST_SESSION = 1800  # well above the SDKs' 15-minute refresh window, so they do not ask on every call
REFRESH_MARGIN = timedelta(minutes=20)  # the SDKs ask again 15 minutes before expiry
STILL_GOOD = timedelta(minutes=1)  # held credentials are served while minting fails, until this close to expiry
PATH = "/v1/credentials"
URI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
# The addresses botocore's container provider takes over plain HTTP that a container can reach.
ADDRESSES = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")
REQUEST_SECONDS = 5  # a connection that sends nothing for this long is closed
MOST_AT_ONCE = 32  # requests served at once; more wait for a turn

Credentials = dict[str, str]  # AccessKeyId, SecretAccessKey, Token (temporary ones), Expiration (ISO 8601, UTC)


@dataclass
class _Grant:
    job: str
    mint: Callable[[], Credentials]
    held: Credentials | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> Credentials:
        """The credentials to serve: those held while more than REFRESH_MARGIN is left of them, else
        new ones; the held ones still, while they last, when minting new ones fails.

        Raises:
            Exception: minting failed and nothing usable is held.
        """
        with self.lock:
            left = _expires(self.held) - datetime.now(UTC) if self.held is not None else timedelta(0)
            if left < REFRESH_MARGIN:
                try:
                    self.held = self.mint()
                    _changed()
                except Exception:
                    if left < STILL_GOOD:
                        raise
                    log.warning("new credentials for %s could not be minted; serving those held", self.job)
            assert self.held is not None
            return self.held

    def values(self) -> frozenset[str]:
        """The secret parts of the credentials held (a container line that prints one is masked)."""
        held = self.held or {}
        return frozenset(v for k, v in held.items() if k in ("SecretAccessKey", "Token") and v)


def _expires(credentials: Credentials) -> datetime:
    return datetime.fromisoformat(credentials["Expiration"].replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    """An Expiration as the SDKs read it: ISO 8601 in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Endpoint:
    """One HTTP endpoint on `address` serving each granted job's credentials to its token's holder."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.address, self.grants, self.lock = address, dict[str, _Grant](), threading.Lock()
        endpoint = self
        turns = threading.BoundedSemaphore(MOST_AT_ONCE)

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_SECONDS  # a client that holds a connection open and silent is let go

            def handle(self) -> None:
                with turns:
                    super().handle()

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "")
                grant = endpoint.find(token) if self.path.split("?")[0] == PATH else None
                if grant is None:
                    self._answer(403, {"code": "AccessDenied", "message": "no credentials for this token"})
                    return
                try:
                    self._answer(200, grant.current())
                except Exception as exc:  # noqa: BLE001 - the container is told; the orchestrator's log says why
                    log.warning("credentials for %s could not be minted: %s", grant.job, exc)
                    self._answer(500, {"code": "InternalError", "message": "the credentials could not be minted"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps({k: v for k, v in body.items() if v}).encode()  # fixed keys have no Token
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a request line holds no secret, but the log has no use for it either

        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": _family(address)})
        try:
            self.server = server_class((address, port), Handler)
        except OSError as exc:
            fix = (
                f"another process holds port {port} there: stop it, or rerun the job to restart it from its checkpoints"
                if port
                else f"give this machine the address (`ip addr add {address}/32 dev lo`, as scripts/setup does), "
                "or run the job without a role"
            )
            raise DockyardError(f"role: the credentials endpoint cannot listen on {address} ({exc}) — {fix}") from exc
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        host = f"[{address}]" if ":" in address else address
        self.uri = f"http://{host}:{self.port}{PATH}"
        threading.Thread(target=self.server.serve_forever, name="credentials-endpoint", daemon=True).start()

    def find(self, token: str) -> _Grant | None:
        with self.lock:
            known = list(self.grants.items())
        found = None
        for candidate, grant in known:  # every token compared, in constant time each
            if hmac.compare_digest(candidate.encode(), token.encode()):
                found = grant
        return found

    def grant(self, job: str, mint: Callable[[], Credentials], token: str | None = None) -> str:
        """Serve `job` credentials from `mint` (minted once now, so a refusal fails the job here) to
        the holder of `token` (default: a new one); the token.

        Raises:
            DockyardError: `token` is another job's.
        """
        grant = _Grant(job, mint)
        grant.current()
        token = token or secrets.token_urlsafe(32)
        with self.lock:
            held = self.grants.get(token)
            if held is not None and held.job != job:
                raise DockyardError(f"role: the token {job}'s containers hold is another job's; it is not served")
            for known in [t for t, g in self.grants.items() if g.job == job]:
                del self.grants[known]
            self.grants[token] = grant
        _changed()
        return token

    def revoke(self, job: str) -> None:
        with self.lock:
            for token in [t for t, g in self.grants.items() if g.job == job]:
                del self.grants[token]
        _changed()

    def values(self, job: str) -> frozenset[str]:
        with self.lock:
            mine = [(t, g) for t, g in self.grants.items() if g.job == job]
        return frozenset(t for t, _ in mine).union(*(g.values() for _, g in mine))


def _family(address: str) -> int:
    import socket

    return socket.AF_INET6 if ":" in address else socket.AF_INET


_ENDPOINTS: list[Endpoint] = []
_LOCK = threading.Lock()
_changes = 0  # counts every change to what any endpoint serves: readers recompute secret_values only then


def changes() -> int:
    """How many times what this process serves has changed (cheap: no lock, for a per-line check)."""
    return _changes


def _changed() -> None:
    global _changes
    _changes += 1


def endpoint(address: str, port: int = 0) -> Endpoint:
    """This process's endpoint on `address` (on `port`, when containers were given it), started on first use."""
    with _LOCK:
        for served in _ENDPOINTS:
            if served.address == address and port in (0, served.port):
                return served
        served = Endpoint(address, port)
        _ENDPOINTS.append(served)
        return served


def session_seconds(spec: TrainingJobSpec) -> int:
    """How long each set of minted credentials lasts: no longer than the job may run (and a margin),
    within STS's hour and above the SDKs' refresh window; a longer job gets new ones as it goes."""
    return max(SHORTEST_SESSION, min(SESSION_SECONDS, spec.stopping_condition.max_runtime_in_seconds + 600))


def assume_role(spec: TrainingJobSpec, settings: Settings) -> Credentials:
    """Credentials for the job's role from STS, narrowed by the job's session policy.

    Raises:
        DockyardError: STS refused (the role does not exist, or this machine's credentials may not assume it).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        policy = session_policy(spec)
    except ValueError as exc:
        raise DockyardError(f"role: {exc}") from exc
    # Short waits: a container's SDK gives the endpoint about 6 s before it gives up.
    config = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})
    sts = boto3.session.Session().client(
        "sts", endpoint_url=settings.sts_endpoint_url, region_name=settings.region, config=config
    )
    session = re.sub(r"[^\w+=,.@-]", "-", f"dockyard-{spec.training_job_name}")[:64]
    try:
        answer = sts.assume_role(
            RoleArn=spec.role, RoleSessionName=session, Policy=policy, DurationSeconds=session_seconds(spec)
        )
    except (ClientError, BotoCoreError) as exc:
        raise DockyardError(
            f"role: STS at {settings.sts_endpoint_url} did not give credentials for {spec.role} ({exc}) — check "
            "that the role exists and that this machine's AWS credentials may assume it"
        ) from exc
    given = answer["Credentials"]
    expiration = given["Expiration"]
    return {
        "AccessKeyId": given["AccessKeyId"],
        "SecretAccessKey": given["SecretAccessKey"],
        "Token": given["SessionToken"],
        "Expiration": _iso(expiration),
    }


def mapped_profile(role: str, settings: Settings) -> str | None:
    """The AWS profile DOCKYARD_ROLES_FILE maps `role` to, if any.

    Raises:
        DockyardError: the file cannot be read, or is not a mapping under `roles`.
    """
    if not settings.roles_file:
        return None
    import yaml

    problem = "it holds no mapping under `roles`"
    try:
        with open(settings.roles_file) as f:
            roles = (yaml.safe_load(f) or {}).get("roles") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        roles, problem = None, str(exc)
    if not isinstance(roles, dict):
        raise DockyardError(
            f"DOCKYARD_ROLES_FILE: {settings.roles_file} cannot be read as `roles: {{ROLE_ARN: PROFILE}}` ({problem})"
        )
    profile = roles.get(role)
    return str(profile) if profile else None


def profile_credentials(profile: str) -> Credentials:
    """The credentials of one of this machine's AWS profiles, as the endpoint serves them (fixed keys
    are served for an hour at a time; temporary ones until they expire).

    Raises:
        DockyardError: the profile does not exist or has no credentials.
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        found = boto3.session.Session(profile_name=profile).get_credentials()
        frozen = found.get_frozen_credentials() if found else None
    except BotoCoreError as exc:
        frozen, found = None, None
        problem = str(exc)
    else:
        problem = "it has no credentials"
    if frozen is None or found is None:
        raise DockyardError(
            f"DOCKYARD_ROLES_FILE: the AWS profile '{profile}' gives no credentials ({problem}) — "
            "name a profile of this machine's AWS config"
        )
    # A profile that assumes a role holds refreshable credentials: botocore keeps their expiry
    # (unexposed otherwise), which the containers must be told; fixed keys get an hour at a time.
    expiry = getattr(found, "_expiry_time", None) or datetime.now(UTC) + timedelta(seconds=SESSION_SECONDS)
    return {
        "AccessKeyId": frozen.access_key,
        "SecretAccessKey": frozen.secret_key,
        "Token": frozen.token or "",  # fixed keys have none, and the endpoint sends none
        "Expiration": _iso(expiry),
    }


def minter(spec: TrainingJobSpec, settings: Settings) -> Callable[[], Credentials] | None:
    """Where the job's role's credentials come from: STS, else the profile the roles file maps it to."""
    if not spec.role:
        return None
    if settings.sts_endpoint_url:
        return lambda: assume_role(spec, settings)
    profile = mapped_profile(spec.role, settings)
    return (lambda: profile_credentials(profile)) if profile else None


def container_environment(spec: TrainingJobSpec, settings: Settings) -> dict[str, str]:
    """The environment that gives the job's containers credentials for its role, and the S3
    endpoint to use them with; none for a job without a role, an isolated job, or a role
    neither STS nor the roles file gives credentials for."""
    if not spec.role:
        return {}
    if spec.enable_network_isolation:
        why = f"the containers get no credentials for {spec.role}: the job is network-isolated"
        job_log.report(settings.home, spec.training_job_name, why)
        return {}
    mint = minter(spec, settings)
    if mint is None:
        job_log.report(
            settings.home,
            spec.training_job_name,
            f"the containers get no credentials for {spec.role}: set DOCKYARD_STS_ENDPOINT_URL, "
            "or map the role to an AWS profile in DOCKYARD_ROLES_FILE",
        )
        return {}
    if settings.credentials_address not in ADDRESSES:
        raise DockyardError(
            f"DOCKYARD_CREDENTIALS_ADDRESS: the SDKs in containers take credentials over HTTP from "
            f"{', '.join(ADDRESSES)} only, not {settings.credentials_address}: use one of them"
        )
    served = endpoint(settings.credentials_address)
    token = served.grant(spec.training_job_name, mint)
    env = {
        URI: served.uri,
        TOKEN: token,
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
    }
    if settings.container_s3_endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = settings.container_s3_endpoint_url
    return env


def resume(spec: TrainingJobSpec, settings: Settings, given: dict[str, str]) -> str | None:
    """Serve a picked-up job's running containers again, at the address and with the token they
    were `given` (their environment: nothing is written down); the URI, or None when they have none.

    Raises:
        DockyardError: the port is taken, or STS refuses.
    """
    uri, token = given.get(URI), given.get(TOKEN)
    if not uri or not token or not spec.role or spec.enable_network_isolation:
        return None
    parsed = urlsplit(uri)
    if parsed.hostname != settings.credentials_address or not parsed.port or parsed.path != PATH:
        raise DockyardError(
            f"role: the containers were given {uri}, which is not this machine's credentials endpoint "
            f"(DOCKYARD_CREDENTIALS_ADDRESS {settings.credentials_address}); rerun the job on the machine it started on"
        )
    mint = minter(spec, settings)
    if mint is None:
        raise DockyardError(
            f"role: nothing here gives credentials for {spec.role}: set DOCKYARD_STS_ENDPOINT_URL, or map the "
            "role to an AWS profile in DOCKYARD_ROLES_FILE, as where the job started"
        )
    served = endpoint(parsed.hostname, parsed.port)
    served.grant(spec.training_job_name, mint, token)
    return served.uri


def secret_values(job: str) -> frozenset[str]:
    """The job's token and the secret parts of the credentials served to it, in this process
    (secrets: a container line that prints one is masked)."""
    with _LOCK:
        served = list(_ENDPOINTS)
    return frozenset().union(*(e.values(job) for e in served))


def revoke(job: str) -> None:
    """The job's containers get no more credentials from this process."""
    with _LOCK:
        served = list(_ENDPOINTS)
    for e in served:
        e.revoke(job)
