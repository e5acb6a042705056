"""System metrics: one row per instance per profiling interval (the profiler's samples).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_job_system_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("host", sa.String(32), nullable=False),
        sa.Column("timestamp", sa.DateTime, nullable=False),
        sa.Column("sample", sa.Text, nullable=False),
    )
    op.create_index("ix_training_job_system_samples_job_name", "training_job_system_samples", ["job_name"])


def downgrade() -> None:
    op.drop_index("ix_training_job_system_samples_job_name", "training_job_system_samples")
    op.drop_table("training_job_system_samples")
