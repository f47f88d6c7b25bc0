"""Alembic migrations of the job database (jobs, their blobs and user styles)."""
