"""The job table and its blobs: the single source of truth every runner and API host shares.

Images live in a separate blob table so listing and polling jobs never drags megabytes of pixels
through the database, and so API and workers on different hosts need nothing but the database and
the broker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.succeeded, JobState.failed, JobState.cancelled}
)


class BlobKind(StrEnum):
    """Inputs (content, style, source), what a worker writes (preview, checkpoint, result)."""

    content = "content"
    style = "style"
    source = "source"
    preview = "preview"
    checkpoint = "checkpoint"
    result = "result"


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database, aware UTC in Python.

    SQLite has no time zones and compares timestamps as text, so every host writes the same
    naive-UTC form and lease comparisons stay correct on both SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("job timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


def _state_values(enum: type[JobState]) -> list[str]:
    return [member.value for member in enum]


class Job(Base):
    """One job of any kind. Progress and the cancel flag live here, so every runner behaves
    the same: workers write progress and read the flag; the API does the opposite.

    `checkpoint_iteration` is where the job's saved checkpoint (if any) stands: a job handed back
    to the queue restarts its progress there, not at 0. `metrics` holds a kind's own progress
    numbers (images/s, frames per second, ...).
    """

    __tablename__ = "atelier_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The server default only types rows written before job kinds existed (all Gatys).
    kind: Mapped[str] = mapped_column(String(16), server_default="gatys")
    owner: Mapped[str | None] = mapped_column(String(80), index=True)
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, native_enum=False, length=16, values_callable=_state_values)
    )
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    backbone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    device: Mapped[str | None] = mapped_column(String(32))
    style_count: Mapped[int] = mapped_column(Integer)

    iteration: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer)
    content_loss: Mapped[float | None] = mapped_column(Float)
    style_loss: Mapped[float | None] = mapped_column(Float)
    tv_loss: Mapped[float | None] = mapped_column(Float)
    eta_s: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    checkpoint_iteration: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    has_preview: Mapped[bool] = mapped_column(Boolean, default=False)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, float] | None] = mapped_column(JSON)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Claims scan queued jobs oldest first; sweeps scan running jobs by lease.
        Index("ix_atelier_jobs_state_created", "state", "created_at"),
        Index("ix_atelier_jobs_kind_state_created", "kind", "state", "created_at"),
        Index("ix_atelier_jobs_state_lease", "state", "lease_expires"),
    )

    @property
    def percent(self) -> float:
        return round(100.0 * self.iteration / self.total, 1) if self.total else 0.0


class JobBlob(Base):
    """Bytes belonging to a job: its inputs, latest preview (JPEG), checkpoint and result.

    Image blobs keep their dimensions beside the bytes, so serving one needs no decode.
    """

    __tablename__ = "atelier_job_blobs"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("atelier_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    media_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobHistoryRow(Base):
    """One point of a job's loss curve (weighted losses averaged over the steps up to `step`)."""

    __tablename__ = "atelier_job_history"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("atelier_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_loss: Mapped[float] = mapped_column(Float)
    style_loss: Mapped[float] = mapped_column(Float)
    tv_loss: Mapped[float] = mapped_column(Float)
