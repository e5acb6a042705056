"""The fleet: hosts registered by `dockyard worker`, the instances granted on
them, and the history of every grant and release.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _grant_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("host", sa.String(63), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpu_ids", sa.String(255), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "fleet_hosts",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("gpu_kind", sa.String(128), nullable=False),
        sa.Column("disk_free_bytes", sa.BigInteger, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("draining", sa.Boolean, nullable=False),
        sa.Column("registered_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "fleet_grants",
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("instance", sa.String(16), primary_key=True),
        *_grant_columns(),
        sa.Column("granted_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_fleet_grants_host", "fleet_grants", ["host"])
    op.create_table(
        "fleet_grant_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("event", sa.String(8), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("instance", sa.String(16), nullable=False),
        *_grant_columns(),
    )


def downgrade() -> None:
    op.drop_table("fleet_grant_history")
    op.drop_index("ix_fleet_grants_host", "fleet_grants")
    op.drop_table("fleet_grants")
    op.drop_table("fleet_hosts")
