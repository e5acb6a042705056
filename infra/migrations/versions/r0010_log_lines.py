"""Log lines: every line a job's containers print, from whichever host, so any machine of a fleet
reads the whole log.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_job_log_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("host", sa.String(32), nullable=False),
        sa.Column("timestamp", sa.DateTime, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_training_job_log_lines_job_name", "training_job_log_lines", ["job_name"])


def downgrade() -> None:
    op.drop_index("ix_training_job_log_lines_job_name", "training_job_log_lines")
    op.drop_table("training_job_log_lines")
