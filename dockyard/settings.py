"""dockyard's settings: where things live and how patient to be.

Read from an environment mapping by `Settings.from_env`, never on import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    home: Path  # DOCKYARD_HOME: embedded stores, job records, logs, scratch
    s3_endpoint_url: str | None = None  # DOCKYARD_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL
    base_image: str | None = None  # DOCKYARD_BASE_IMAGE: BASE_IMAGE for built-in images
    stop_grace_seconds: float = 120.0  # DOCKYARD_STOP_GRACE_SECONDS: SIGTERM to SIGKILL
    staging_concurrency: int = 8  # DOCKYARD_STAGING_CONCURRENCY: parallel downloads
    monitor_lost_contact_seconds: float = 60.0  # how long the engine may be unreachable
    prefect_api_url: str | None = None  # PREFECT_API_URL: a Prefect server to use
    cloudwatch: bool = False  # DOCKYARD_CLOUDWATCH=1: send job logs and metrics to CloudWatch
    # DOCKYARD_DATABASE_URL: the job store (any SQLAlchemy URL); default SQLite under home.
    # A secret: it may carry a password.
    database_url: SecretStr | None = None
    lease_seconds: float = 30.0  # DOCKYARD_LEASE_SECONDS: a dead orchestrator's job is free after this
    spot_simulation: str = ""  # DOCKYARD_SPOT_SIMULATION: the local spot market (dockyard/spot.py)
    mlflow_tracking_uri: str | None = None  # MLFLOW_TRACKING_URI; default SQLite under home
    # `dockyard serve`'s principals: one key pair from DOCKYARD_ACCESS_KEY_ID and
    # DOCKYARD_SECRET_ACCESS_KEY, and/or several in DOCKYARD_KEYS_FILE (api/auth.py).
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    keys_file: str | None = None
    work_pool: str = "dockyard"  # DOCKYARD_WORK_POOL: the Prefect work pool `dockyard serve` submits jobs to
    # A job's role becomes its containers' credentials (infra/credentials.py): STS to assume it at,
    # the address the credentials endpoint listens on, and the S3 endpoint the containers are told.
    sts_endpoint_url: str | None = None  # DOCKYARD_STS_ENDPOINT_URL
    credentials_address: str = "169.254.170.2"  # DOCKYARD_CREDENTIALS_ADDRESS
    container_s3_endpoint_url: str | None = None  # DOCKYARD_CONTAINER_S3_ENDPOINT_URL
    roles_file: str | None = None  # DOCKYARD_ROLES_FILE: without STS, `roles: {ROLE_ARN: AWS_PROFILE}`
    region: str = "us-east-1"  # AWS_REGION, else AWS_DEFAULT_REGION
    # DOCKYARD_FLEET_HOST: the fleet host this process's jobs take their capacity on (set by
    # `dockyard worker` for its flow runs); unset, jobs run on this machine without grants.
    fleet_host: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        home = environ.get("DOCKYARD_HOME") or str(Path(environ.get("HOME", "/root")) / ".dockyard")
        return cls(
            home=Path(os.path.abspath(os.path.expanduser(home))),
            s3_endpoint_url=environ.get("DOCKYARD_S3_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL"),
            base_image=environ.get("DOCKYARD_BASE_IMAGE") or None,
            stop_grace_seconds=float(environ.get("DOCKYARD_STOP_GRACE_SECONDS", "120")),
            staging_concurrency=int(environ.get("DOCKYARD_STAGING_CONCURRENCY", "8")),
            monitor_lost_contact_seconds=float(environ.get("DOCKYARD_LOST_CONTACT_SECONDS", "60")),
            prefect_api_url=environ.get("PREFECT_API_URL") or None,
            cloudwatch=environ.get("DOCKYARD_CLOUDWATCH", "").lower() in ("1", "true", "yes"),
            database_url=SecretStr(environ["DOCKYARD_DATABASE_URL"]) if environ.get("DOCKYARD_DATABASE_URL") else None,
            lease_seconds=float(environ.get("DOCKYARD_LEASE_SECONDS", "30")),
            spot_simulation=environ.get("DOCKYARD_SPOT_SIMULATION", ""),
            mlflow_tracking_uri=environ.get("MLFLOW_TRACKING_URI") or None,
            access_key_id=environ.get("DOCKYARD_ACCESS_KEY_ID") or None,
            secret_access_key=SecretStr(environ["DOCKYARD_SECRET_ACCESS_KEY"])
            if environ.get("DOCKYARD_SECRET_ACCESS_KEY")
            else None,
            keys_file=environ.get("DOCKYARD_KEYS_FILE") or None,
            work_pool=environ.get("DOCKYARD_WORK_POOL") or "dockyard",
            sts_endpoint_url=environ.get("DOCKYARD_STS_ENDPOINT_URL") or None,
            credentials_address=environ.get("DOCKYARD_CREDENTIALS_ADDRESS") or "169.254.170.2",
            container_s3_endpoint_url=environ.get("DOCKYARD_CONTAINER_S3_ENDPOINT_URL") or None,
            roles_file=environ.get("DOCKYARD_ROLES_FILE") or None,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            fleet_host=environ.get("DOCKYARD_FLEET_HOST") or None,
        )

    def scratch_root(self) -> Path:
        """Where instances' /opt/ml folders are made on this machine."""
        return self.home / "scratch"

    def store_url(self) -> str:
        """The job store's SQLAlchemy URL (with its password: never show it)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home / 'dockyard.db'}"

    def catalog_uri(self) -> str:
        """The MLflow tracking URI of the catalog."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"
