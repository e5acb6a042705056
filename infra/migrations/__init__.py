"""The job store's schema, as Alembic migrations (versions/), applied by `upgrade`.

Add a migration for every schema change (`alembic revision` with this folder
as script_location) and raise infra.job_store.SCHEMA_REVISION to it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

FOLDER = Path(__file__).parent


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(FOLDER))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The newest revision the scripts define."""
    return ScriptDirectory.from_config(config()).get_current_head()


def upgrade(connection: Connection) -> None:
    """Bring the schema on `connection` to the newest revision, inside its transaction."""
    command.upgrade(config(connection), "head")
