"""Long-running optimisation jobs: a job table as the source of truth, runners that claim jobs
under a lease, and a sweeper that rescues jobs whose worker died.

    models.py   the job row and its image blobs
    store.py    every state transition, as a conditional UPDATE
    execute.py  run one claimed job: inputs -> engine -> progress, preview, result or reason
    lease.py    worker ids and lease renewal
    sweeper.py  requeue or fail jobs whose lease lapsed
    runners/    embedded thread (local) or Celery worker (celery_worker)
    runtime.py  what an API process owns: store, runner or broker, sweeper
"""

from app.jobs.models import TERMINAL_STATES, Job, JobState
from app.jobs.store import JobNotFound, JobStore, NewJob

__all__ = ["TERMINAL_STATES", "Job", "JobNotFound", "JobState", "JobStore", "NewJob"]
