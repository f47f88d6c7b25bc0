"""The job store fixtures (SQLite and PostgreSQL databases, builders) the migration tests share."""

from tests.jobs.conftest import (  # noqa: F401  (fixtures are found by name)
    clock,
    helpers,
    postgres_admin_url,
    postgres_schema_url,
    store_url,
)
