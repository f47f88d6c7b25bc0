"""Job kinds (Gatys, training, video), resumable checkpoints, blob dimensions, trained styles.

- atelier_jobs: `kind` (existing rows are Gatys jobs), kind-specific `metrics`, the
  `checkpoint_iteration` a requeued job resumes from, `backbone` optional (video has none).
- atelier_job_blobs: width and height beside image blobs, so serving one needs no decode.
- user_styles: `engine` (existing rows are arbitrary-style vectors) and the `weights` of
  styles trained by Atelier; `vector` becomes optional since a trained style has none.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("atelier_jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="gatys"))
        batch.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("checkpoint_iteration", sa.Integer(), nullable=False, server_default="0")
        )
        batch.alter_column("backbone", existing_type=sa.String(32), nullable=True)
    op.create_index(
        "ix_atelier_jobs_kind_state_created", "atelier_jobs", ["kind", "state", "created_at"]
    )
    with op.batch_alter_table("atelier_job_blobs") as batch:
        batch.add_column(sa.Column("width", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("height", sa.Integer(), nullable=True))
    with op.batch_alter_table("user_styles") as batch:
        batch.add_column(
            sa.Column("engine", sa.String(32), nullable=False, server_default="arbitrary")
        )
        batch.add_column(sa.Column("weights", sa.LargeBinary(), nullable=True))
        batch.alter_column("vector", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("user_styles") as batch:
        batch.drop_column("weights")
        batch.drop_column("engine")
    with op.batch_alter_table("atelier_job_blobs") as batch:
        batch.drop_column("height")
        batch.drop_column("width")
    op.drop_index("ix_atelier_jobs_kind_state_created", table_name="atelier_jobs")
    with op.batch_alter_table("atelier_jobs") as batch:
        batch.drop_column("checkpoint_iteration")
        batch.drop_column("metrics")
        batch.drop_column("kind")
