"""JobStore: every job state change, as one conditional UPDATE each.

Every transition names the state (and, for worker-side writes, the lease owner) it expects in its
WHERE clause, so two writers can never both win: a second claimer, a worker whose lease was taken
away, or a sweeper racing a heartbeat simply changes zero rows and is told so (False / None).
That makes the same code correct on SQLite (single writer) and PostgreSQL (where claims also use
SELECT ... FOR UPDATE SKIP LOCKED so concurrent claimers skip each other's candidates).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Update

from app.core.database import upgrade_schema
from app.core.progress import ProgressUpdate
from app.jobs.history import HistoryPoint
from app.jobs.models import TERMINAL_STATES, BlobKind, Job, JobBlob, JobHistoryRow, JobState

PNG = "image/png"
MAX_CLAIM_RACES = 10  # candidates lost to other claimers before giving up until the next poll


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


@dataclass(frozen=True)
class JobInput:
    """One uploaded input, already validated and normalised by the API."""

    kind: BlobKind
    data: bytes
    media_type: str = PNG


@dataclass(frozen=True)
class NewJob:
    """What the API hands the store: a kind, validated options and the inputs in order."""

    options: dict[str, Any]
    total: int
    inputs: list[JobInput]
    kind: str
    backbone: str | None = None
    owner: str | None = None

    @classmethod
    def gatys(
        cls,
        options: dict[str, Any],
        backbone: str,
        total: int,
        content: bytes,
        styles: list[bytes],
        owner: str | None = None,
    ) -> NewJob:
        inputs = [JobInput(BlobKind.content, content)]
        inputs += [JobInput(BlobKind.style, data) for data in styles]
        return cls(options, total, inputs, "gatys", backbone, owner)


@dataclass(frozen=True)
class StoredBlob:
    data: bytes
    media_type: str
    width: int | None
    height: int | None


@dataclass(frozen=True)
class JobPage:
    items: list[Job]
    total: int


@dataclass(frozen=True)
class LeaseOutcome:
    """What a sweep did to a job whose lease lapsed."""

    job_id: str
    state: JobState
    kind: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_job_engine(url: str) -> Engine:
    """An engine tuned for job traffic: WAL and a busy timeout on SQLite, liveness checks on
    server databases (a worker may idle for hours between jobs)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 5
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL lets the API read progress while a worker thread writes it.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class JobStore:
    """Job rows and blobs behind one SQLAlchemy engine; safe to share between threads.

    Returned `Job` objects are detached snapshots: read them freely, never write to them.
    """

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = create_job_engine(url)
        self.clock = clock
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._schema_ready = False

    def create_schema(self) -> None:
        """Create or migrate the tables (app.core.database), once per store."""
        if self._schema_ready:
            return
        upgrade_schema(self.engine)
        self._schema_ready = True

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    # --- API side -----------------------------------------------------------------------------

    def create(self, new: NewJob) -> Job:
        job = Job(
            id=uuid.uuid4().hex,
            kind=new.kind,
            owner=new.owner,
            state=JobState.queued,
            options=new.options,
            backbone=new.backbone,
            style_count=sum(1 for item in new.inputs if item.kind is BlobKind.style),
            iteration=0,
            checkpoint_iteration=0,
            total=new.total,
            has_preview=False,
            attempts=0,
            cancel_requested=False,
            created_at=self.clock(),
        )
        positions: dict[BlobKind, int] = {}
        blobs = []
        for item in new.inputs:
            position = positions.get(item.kind, 0)
            positions[item.kind] = position + 1
            blobs.append(
                JobBlob(
                    job_id=job.id,
                    kind=item.kind,
                    position=position,
                    data=item.data,
                    media_type=item.media_type,
                )
            )
        with self._session() as session:
            session.add(job)
            session.flush()  # the row must exist before blobs reference it
            session.add_all(blobs)
            session.commit()
        return job

    def get(self, job_id: str) -> Job:
        with self._session() as session:
            job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        owner: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> JobPage:
        """Newest first."""
        conditions = []
        if state is not None:
            conditions.append(Job.state == state)
        if kind is not None:
            conditions.append(Job.kind == kind)
        if owner is not None:
            conditions.append(Job.owner == owner)
        with self._session() as session:
            total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
            items = session.scalars(
                select(Job)
                .where(*conditions)
                .order_by(Job.created_at.desc(), Job.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return JobPage(items=list(items), total=total)

    def count_pending(self, owner: str) -> int:
        """Queued plus running jobs of one client: what the per-client limit counts."""
        with self._session() as session:
            query = (
                select(func.count())
                .select_from(Job)
                .where(Job.owner == owner, Job.state.in_([JobState.queued, JobState.running]))
            )
            return session.scalar(query) or 0

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, flag a running one for its worker; finished jobs and
        repeated calls are left as they are (idempotent)."""
        now = self.clock()
        with self._session() as session:
            cancelled = self._rowcount(
                session,
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.queued)
                .values(state=JobState.cancelled, cancel_requested=True, finished_at=now),
            )
            if not cancelled:
                self._rowcount(
                    session,
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.running)
                    .values(cancel_requested=True),
                )
            session.commit()
        return self.get(job_id)

    def fail_unstarted(self, job_id: str, reason: str) -> bool:
        """A queued job that can never run (e.g. the broker refused it)."""
        with self._session() as session:
            changed = self._rowcount(
                session,
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.queued)
                .values(state=JobState.failed, error=reason, finished_at=self.clock()),
            )
            session.commit()
        return changed

    def blobs(self, job_id: str, kind: BlobKind) -> list[bytes]:
        """Every blob of one kind, in upload order (e.g. a training job's photos)."""
        with self._session() as session:
            rows = session.scalars(
                select(JobBlob.data)
                .where(JobBlob.job_id == job_id, JobBlob.kind == kind)
                .order_by(JobBlob.position)
            ).all()
        return list(rows)

    def blob(self, job_id: str, kind: BlobKind) -> bytes | None:
        stored = self.stored_blob(job_id, kind)
        return None if stored is None else stored.data

    def stored_blob(self, job_id: str, kind: BlobKind) -> StoredBlob | None:
        """The first blob of `kind` with its media type and (for images) dimensions."""
        with self._session() as session:
            row = session.execute(
                select(JobBlob.data, JobBlob.media_type, JobBlob.width, JobBlob.height)
                .where(JobBlob.job_id == job_id, JobBlob.kind == kind)
                .order_by(JobBlob.position)
                .limit(1)
            ).first()
        return None if row is None else StoredBlob(*row)

    def history(self, job_id: str, after: int = 0) -> list[HistoryPoint]:
        """The job's loss curve past step `after`, oldest first (incremental polling)."""
        with self._session() as session:
            rows = session.execute(
                select(
                    JobHistoryRow.step,
                    JobHistoryRow.content_loss,
                    JobHistoryRow.style_loss,
                    JobHistoryRow.tv_loss,
                )
                .where(JobHistoryRow.job_id == job_id, JobHistoryRow.step > after)
                .order_by(JobHistoryRow.step)
            ).all()
        return [HistoryPoint(*row) for row in rows]

    # --- worker side --------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        *,
        job_id: str | None = None,
        kinds: Collection[str] | None = None,
    ) -> Job | None:
        """Take the oldest queued job (or exactly `job_id`) of `kinds` (default: any kind) for
        `worker_id`, or None."""
        for _ in range(MAX_CLAIM_RACES):
            with self._session() as session:
                query = select(Job.id).where(Job.state == JobState.queued)
                if job_id is not None:
                    query = query.where(Job.id == job_id)
                if kinds is not None:
                    query = query.where(Job.kind.in_(list(kinds)))
                query = query.order_by(Job.created_at, Job.id).limit(1)
                # Rendered on PostgreSQL only; the conditional UPDATE below is what guarantees
                # exclusivity everywhere.
                query = query.with_for_update(skip_locked=True)
                candidate = session.scalar(query)
                if candidate is None:
                    return None
                now = self.clock()
                won = self._rowcount(
                    session,
                    update(Job)
                    .where(Job.id == candidate, Job.state == JobState.queued)
                    .values(
                        state=JobState.running,
                        lease_owner=worker_id,
                        lease_expires=now + timedelta(seconds=lease_seconds),
                        attempts=Job.attempts + 1,
                        started_at=now,
                    ),
                )
                session.commit()
            if won:
                return self.get(candidate)
            if job_id is not None:
                return None
        return None

    def mark_started(
        self, job_id: str, worker_id: str, *, backbone: str | None, device: str
    ) -> bool:
        return self._update_owned(job_id, worker_id, backbone=backbone, device=device)

    def renew_lease(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False means it was lost (swept, or the job ended) and the worker
        must stop without writing anything else."""
        expires = self.clock() + timedelta(seconds=lease_seconds)
        return self._update_owned(job_id, worker_id, lease_expires=expires)

    def update_progress(self, job_id: str, worker_id: str, progress: ProgressUpdate) -> bool:
        return self._update_owned(job_id, worker_id, **progress.columns())

    def append_history(self, job_id: str, worker_id: str, points: list[HistoryPoint]) -> bool:
        """Add points to the loss curve of a job this worker holds. Points from an earlier
        attempt at or past the first new step are replaced: a resumed run redraws from there."""
        if not points:
            return True
        with self._session() as session:
            # Re-set the lease owner to itself: a no-op that says whether the job is still ours.
            owned = self._owned(job_id, worker_id).values(lease_owner=worker_id)
            if not self._rowcount(session, owned):
                return False
            session.execute(
                delete(JobHistoryRow).where(
                    JobHistoryRow.job_id == job_id, JobHistoryRow.step >= points[0].step
                )
            )
            session.add_all(
                JobHistoryRow(
                    job_id=job_id,
                    step=point.step,
                    content_loss=point.content_loss,
                    style_loss=point.style_loss,
                    tv_loss=point.tv_loss,
                )
                for point in points
            )
            session.commit()
        return True

    def should_stop(self, job_id: str, worker_id: str) -> bool:
        """True when a cancel was requested or this worker no longer holds the job."""
        with self._session() as session:
            row = session.execute(
                select(Job.state, Job.lease_owner, Job.cancel_requested).where(Job.id == job_id)
            ).first()
        if row is None:
            return True
        state, owner, cancel = row
        return bool(cancel) or state != JobState.running or owner != worker_id

    def save_preview(
        self, job_id: str, worker_id: str, jpeg: bytes, size: tuple[int, int] | None = None
    ) -> bool:
        """Replace the preview; `size` is (width, height), kept so serving needs no decode."""
        with self._session() as session:
            if not self._rowcount(session, self._owned(job_id, worker_id).values(has_preview=True)):
                return False
            self._replace_blob(session, job_id, BlobKind.preview, jpeg, "image/jpeg", size)
            session.commit()
        return True

    def save_checkpoint(self, job_id: str, worker_id: str, data: bytes, iteration: int) -> bool:
        """Keep a running job's checkpoint; a later attempt resumes at `iteration`."""
        with self._session() as session:
            owned = self._owned(job_id, worker_id).values(checkpoint_iteration=iteration)
            if not self._rowcount(session, owned):
                return False
            self._replace_blob(
                session, job_id, BlobKind.checkpoint, data, "application/octet-stream"
            )
            session.commit()
        return True

    def set_options(self, job_id: str, worker_id: str, options: dict[str, Any]) -> bool:
        """Rewrite a running job's options, for what its worker changed (e.g. `downscaled_to`)."""
        return self._update_owned(job_id, worker_id, options=options)

    def finish(
        self,
        job_id: str,
        worker_id: str,
        data: bytes,
        timings: dict[str, float] | None = None,
        *,
        media_type: str = PNG,
        size: tuple[int, int] | None = None,
    ) -> bool:
        """Succeed with the result; the row and blob change in one transaction. The checkpoint
        has done its work and is dropped.

        A cancel requested before this commits wins (False, and the worker records the cancel):
        so once DELETE has answered with a job not yet succeeded, it never succeeds.
        """
        with self._session() as session:
            changed = self._rowcount(
                session,
                self._owned(job_id, worker_id)
                .where(Job.cancel_requested.is_(False))
                .values(**self._ending(JobState.succeeded, timings), eta_s=0.0),
            )
            if not changed:
                return False
            self._replace_blob(session, job_id, BlobKind.result, data, media_type, size)
            self._drop_blob(session, job_id, BlobKind.checkpoint)
            session.commit()
        return True

    def fail(
        self,
        job_id: str,
        worker_id: str,
        reason: str,
        timings: dict[str, float] | None = None,
    ) -> bool:
        return self._update_owned(
            job_id, worker_id, error=reason, **self._ending(JobState.failed, timings)
        )

    def mark_cancelled(
        self, job_id: str, worker_id: str, timings: dict[str, float] | None = None
    ) -> bool:
        return self._update_owned(job_id, worker_id, **self._ending(JobState.cancelled, timings))

    def release(self, job_id: str, worker_id: str) -> bool:
        """Hand a running job back to the queue (graceful shutdown); the attempt is not counted
        because the job did nothing wrong."""
        with self._session() as session:
            changed = self._rowcount(
                session,
                self._owned(job_id, worker_id).values(
                    attempts=Job.attempts - 1, **self._requeued()
                ),
            )
            if changed:
                self._drop_blob(session, job_id, BlobKind.preview)
            session.commit()
        return changed

    # --- sweeping -----------------------------------------------------------------------------

    def purge_finished(self, older_than: timedelta) -> int:
        """Delete jobs that ended more than `older_than` ago, with their blobs; returns how many.

        Blobs are deleted explicitly (not only by ON DELETE CASCADE) so SQLite without the
        foreign-keys pragma cannot leave orphans behind.
        """
        cutoff = self.clock() - older_than
        finished = select(Job.id).where(
            Job.state.in_([state.value for state in TERMINAL_STATES]),
            Job.finished_at < cutoff,
        )
        with self._session() as session:
            ids = list(session.scalars(finished))
            if ids:
                session.execute(delete(JobBlob).where(JobBlob.job_id.in_(ids)))
                session.execute(delete(JobHistoryRow).where(JobHistoryRow.job_id.in_(ids)))
                session.execute(delete(Job).where(Job.id.in_(ids)))
                session.commit()
        return len(ids)

    def count_by_state(self) -> dict[JobState, int]:
        """Jobs per state, for the metrics gauge."""
        with self._session() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state))
            counts = {state: 0 for state in JobState}
            counts.update({JobState(state): count for state, count in rows})
            return counts

    def requeue_expired(self, max_attempts: int) -> list[LeaseOutcome]:
        """Deal with running jobs whose worker stopped renewing: requeue them, or fail them once
        they have used `max_attempts` runs, or cancel them if a cancel was already asked for."""
        now = self.clock()
        with self._session() as session:
            expired = session.execute(
                select(Job.id, Job.attempts, Job.cancel_requested, Job.lease_owner, Job.kind).where(
                    Job.state == JobState.running, Job.lease_expires < now
                )
            ).all()
        outcomes: list[LeaseOutcome] = []
        for job_id, attempts, cancel, owner, kind in expired:
            values: dict[str, Any]
            if cancel:
                state, values = JobState.cancelled, self._ending(JobState.cancelled, None)
            elif attempts >= max_attempts:
                state = JobState.failed
                values = self._ending(JobState.failed, None)
                values["error"] = (
                    f"the worker running this job stopped responding (lease expired) on each of "
                    f"{attempts} attempt(s); giving up after ATELIER_JOB_MAX_ATTEMPTS="
                    f"{max_attempts} (last worker: {owner})"
                )
            else:
                state, values = JobState.queued, self._requeued()
            with self._session() as session:
                changed = self._rowcount(
                    session,
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state == JobState.running,
                        Job.lease_owner == owner,
                        Job.lease_expires < now,
                    )
                    .values(**values),
                )
                if changed and state is JobState.queued:
                    self._drop_blob(session, job_id, BlobKind.preview)
                session.commit()
            if changed:
                outcomes.append(LeaseOutcome(job_id=job_id, state=state, kind=kind))
        return outcomes

    def running_leases(self) -> list[tuple[str, str]]:
        """(job id, lease owner) of every running job, for spotting owners known to be dead."""
        with self._session() as session:
            rows = session.execute(
                select(Job.id, Job.lease_owner).where(Job.state == JobState.running)
            ).all()
        return [(job_id, owner) for job_id, owner in rows if owner]

    def expire_lease(self, job_id: str, lease_owner: str) -> bool:
        """End a lease now, for an owner known to be dead, so the next sweep need not wait."""
        expired = self.clock() - timedelta(seconds=1)
        return self._update_owned(job_id, lease_owner, lease_expires=expired)

    # --- helpers ------------------------------------------------------------------------------

    def _owned(self, job_id: str, worker_id: str) -> Update:
        return update(Job).where(
            Job.id == job_id, Job.state == JobState.running, Job.lease_owner == worker_id
        )

    def _update_owned(self, job_id: str, worker_id: str, **values: Any) -> bool:
        with self._session() as session:
            changed = self._rowcount(session, self._owned(job_id, worker_id).values(**values))
            session.commit()
        return changed

    def _ending(self, state: JobState, timings: dict[str, float] | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "state": state,
            "finished_at": self.clock(),
            "lease_owner": None,
            "lease_expires": None,
        }
        if timings is not None:
            values["timings"] = timings
        return values

    @staticmethod
    def _requeued() -> dict[str, Any]:
        """Back to the queue; progress falls back to the checkpoint (0 for a kind without)."""
        return {
            "state": JobState.queued,
            "lease_owner": None,
            "lease_expires": None,
            "started_at": None,
            "iteration": Job.checkpoint_iteration,
            **ProgressUpdate.cleared_columns(),
            "has_preview": False,
        }

    @staticmethod
    def _rowcount(session: Session, statement: Update) -> bool:
        result = cast(
            CursorResult[Any],
            session.execute(statement, execution_options={"synchronize_session": False}),
        )
        return result.rowcount == 1

    @staticmethod
    def _replace_blob(
        session: Session,
        job_id: str,
        kind: BlobKind,
        data: bytes,
        media_type: str,
        size: tuple[int, int] | None = None,
    ) -> None:
        JobStore._drop_blob(session, job_id, kind)
        width, height = size if size is not None else (None, None)
        session.add(
            JobBlob(
                job_id=job_id,
                kind=kind,
                position=0,
                data=data,
                media_type=media_type,
                width=width,
                height=height,
            )
        )

    @staticmethod
    def _drop_blob(session: Session, job_id: str, kind: BlobKind) -> None:
        session.execute(delete(JobBlob).where(JobBlob.job_id == job_id, JobBlob.kind == kind))
