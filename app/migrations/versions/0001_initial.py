"""The schema of Atelier 0.1 (Gatys jobs, their blobs, user styles), as `create_all` made it.

Databases created before migrations existed already hold these tables and have no
alembic_version row: each table is created only where it is missing, so upgrading such a
database adopts it as it is.

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


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("atelier_jobs"):
        op.create_table(
            "atelier_jobs",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("owner", sa.String(80), nullable=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("options", sa.JSON(), nullable=False),
            sa.Column("backbone", sa.String(32), nullable=False),
            sa.Column("device", sa.String(32), nullable=True),
            sa.Column("style_count", sa.Integer(), nullable=False),
            sa.Column("iteration", sa.Integer(), nullable=False),
            sa.Column("total", sa.Integer(), nullable=False),
            sa.Column("content_loss", sa.Float(), nullable=True),
            sa.Column("style_loss", sa.Float(), nullable=True),
            sa.Column("tv_loss", sa.Float(), nullable=True),
            sa.Column("eta_s", sa.Float(), nullable=True),
            sa.Column("has_preview", sa.Boolean(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("lease_owner", sa.String(128), nullable=True),
            sa.Column("lease_expires", sa.DateTime(), nullable=True),
            sa.Column("cancel_requested", sa.Boolean(), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("timings", sa.JSON(), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("started_at", sa.DateTime(), nullable=True),
            sa.Column("finished_at", sa.DateTime(), nullable=True),
        )
        op.create_index("ix_atelier_jobs_owner", "atelier_jobs", ["owner"])
        op.create_index("ix_atelier_jobs_state_created", "atelier_jobs", ["state", "created_at"])
        op.create_index("ix_atelier_jobs_state_lease", "atelier_jobs", ["state", "lease_expires"])
    if _missing("atelier_job_blobs"):
        op.create_table(
            "atelier_job_blobs",
            sa.Column(
                "job_id",
                sa.String(32),
                sa.ForeignKey("atelier_jobs.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("kind", sa.String(16), primary_key=True),
            sa.Column("position", sa.Integer(), primary_key=True),
            sa.Column("media_type", sa.String(32), nullable=False),
            sa.Column("data", sa.LargeBinary(), nullable=False),
        )
    if _missing("user_styles"):
        op.create_table(
            "user_styles",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("title", sa.String(200), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("owner", sa.String(100), nullable=True),
            sa.Column("vector", sa.LargeBinary(), nullable=False),
            sa.Column("thumbnail", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_user_styles_owner", "user_styles", ["owner"])


def downgrade() -> None:
    op.drop_table("user_styles")
    op.drop_table("atelier_job_blobs")
    op.drop_table("atelier_jobs")
