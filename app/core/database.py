"""Bring a job database to the current schema with its Alembic migrations.

Every process that opens the database calls `upgrade_schema` (API hosts, workers, the CLI), so a
deployment upgrades itself in place: rows and user styles stay. On PostgreSQL concurrent callers
queue on an advisory lock; on SQLite the database file's write lock serialises them.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parents[1] / "migrations"
_ADVISORY_LOCK = 0x61746C72  # "atlr": any constant shared by every Atelier process


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine) -> None:
    """Apply every migration the database has not seen yet; a no-op when it is current."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    if current_revision(engine) == head_revision():
        return
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # SQLite alters a column by copying its table and dropping the old one; with foreign
            # keys on, that drop would cascade into the job blobs. The pragma only takes effect
            # outside a transaction, hence the commit before the migration's own.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        with connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK}
                )
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
