"""Algorithms: the registry of algorithm specifications (CreateAlgorithm), one row each.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "algorithms",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("creation_time", sa.DateTime(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("algorithms")
