"""User style names are unique per API key, not across the service.

A global name let key B learn, from a 409, that key A had a private style of that name, and take
names before their owners could. Each style now lives in a `namespace`: its key's identity when
API keys are on (owners `key:<digest>`), '' when they are off (one trusted user, one shared
namespace). The primary key becomes (namespace, name); the table is copied, since SQLite cannot
change a primary key in place.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = "name, title, description, owner, engine, vector, weights, thumbnail, created_at"


def _table(name: str, *, namespaced: bool) -> None:
    key = ("namespace", "name") if namespaced else ("name",)
    extra = [sa.Column("namespace", sa.String(100), nullable=False)] if namespaced else []
    op.create_table(
        name,
        *extra,
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("engine", sa.String(32), nullable=False, server_default="arbitrary"),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("weights", sa.LargeBinary(), nullable=True),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Named apart from the old table's key: PostgreSQL names are per schema, not per table.
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}_{'_'.join(key)}"),
    )


def _swap(new: str) -> None:
    op.drop_table("user_styles")
    op.rename_table(new, "user_styles")
    op.create_index("ix_user_styles_owner", "user_styles", ["owner"])


def upgrade() -> None:
    _table("user_styles_namespaced", namespaced=True)
    op.execute(
        f"INSERT INTO user_styles_namespaced (namespace, {_COLUMNS}) "
        f"SELECT CASE WHEN owner LIKE 'key:%' THEN owner ELSE '' END, {_COLUMNS} "
        "FROM user_styles"
    )
    _swap("user_styles_namespaced")


def downgrade() -> None:
    # One global name again: where several keys used a name, the oldest style keeps it.
    _table("user_styles_global", namespaced=False)
    op.execute(
        f"INSERT INTO user_styles_global ({_COLUMNS}) SELECT {_COLUMNS} FROM user_styles s "
        "WHERE NOT EXISTS (SELECT 1 FROM user_styles t WHERE t.name = s.name AND "
        "(t.created_at < s.created_at OR "
        "(t.created_at = s.created_at AND t.namespace < s.namespace)))"
    )
    _swap("user_styles_global")
