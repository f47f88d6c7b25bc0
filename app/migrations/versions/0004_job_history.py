"""Loss history: a job's losses against its steps, for the studio's live loss curves.

One row per recorded point (app/jobs/history.py thins long jobs), keyed by job and step; rows go
with their job (ON DELETE CASCADE, and the purge deletes them explicitly for SQLite).

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
        "atelier_job_history",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("content_loss", sa.Float(), nullable=False),
        sa.Column("style_loss", sa.Float(), nullable=False),
        sa.Column("tv_loss", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["atelier_jobs.id"],
            name="fk_atelier_job_history_job_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "step", name="pk_atelier_job_history"),
    )


def downgrade() -> None:
    op.drop_table("atelier_job_history")
