"""Job kinds: a processing job's record beside the training jobs', told apart for listings.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="training"))
    op.create_index("ix_training_jobs_kind", "training_jobs", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_kind", "training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("kind")
