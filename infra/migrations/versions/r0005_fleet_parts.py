"""Fleet parts: the instances of a job that run on a host other than its orchestrator's.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_parts",
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(63), primary_key=True),
        sa.Column("instances", sa.Text, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("stop_grace", sa.Float),
        sa.Column("exits", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("fleet_parts")
