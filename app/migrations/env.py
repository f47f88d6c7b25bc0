"""Alembic environment: always run from code (app.core.database) on a connection it provides."""

from __future__ import annotations

from alembic import context

from app.jobs.models import Base
from app.styles.user_styles import UserStylesBase

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=[Base.metadata, UserStylesBase.metadata],
    # SQLite cannot ALTER a column in place; batch mode copies the table, PostgreSQL alters.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
