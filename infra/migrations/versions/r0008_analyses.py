"""Analyses: the training job a processing job explains (a Clarify job's model), so a training
job's analyses are found by an index, not by reading every processing job's record.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("explains", sa.String(63), nullable=True))
    op.create_index("ix_training_jobs_explains", "training_jobs", ["explains"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_explains", "training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("explains")
