"""Warm pools: the index of the pools job records hold.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "warm_pools",
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("match_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("host", sa.String(63), nullable=False),
        sa.Column("folder", sa.String(63), nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("reused_by", sa.String(63)),
        sa.Column("cleaned", sa.Boolean, nullable=False),
    )
    op.create_index("ix_warm_pools_match_key", "warm_pools", ["match_key"])
    op.create_index("ix_warm_pools_reused_by", "warm_pools", ["reused_by"])


def downgrade() -> None:
    op.drop_table("warm_pools")
