"""The job store's first tables: training jobs, their status history, tags and
metrics; tuning jobs; orchestrator leases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("primary_status", sa.String(16), nullable=False),
        sa.Column("secondary_status", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.DateTime, nullable=False),
        sa.Column("last_modified_time", sa.DateTime, nullable=False),
        sa.Column("training_end_time", sa.DateTime),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("stop_requested", sa.Text),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_index("ix_training_jobs_creation_time", "training_jobs", ["creation_time"])
    op.create_table(
        "training_job_status_transitions",
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("start_time", sa.DateTime, nullable=False),
        sa.Column("end_time", sa.DateTime),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "training_job_tags",
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "training_job_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("metric_name", sa.String(255), nullable=False),
        sa.Column("host", sa.String(32), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("timestamp", sa.DateTime, nullable=False),
    )
    op.create_index("ix_training_job_metrics_job_name", "training_job_metrics", ["job_name"])
    op.create_table(
        "tuning_jobs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("creation_time", sa.DateTime, nullable=False),
        sa.Column("last_modified_time", sa.DateTime, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_table(
        "orchestrator_leases",
        sa.Column("resource", sa.String(128), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("machine", sa.String(80), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process_started", sa.String(32), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "orchestrator_leases",
        "tuning_jobs",
        "training_job_metrics",
        "training_job_tags",
        "training_job_status_transitions",
        "training_jobs",
    ):
        op.drop_table(table)
