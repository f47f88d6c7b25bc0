"""Long-running jobs of every kind (Gatys, training, video): a job table as the source of truth,
runners that claim jobs under a lease, and a sweeper that rescues jobs whose worker died.

    models.py          the job row and its blobs (inputs, preview, checkpoint, result)
    store.py           every state transition, as a conditional UPDATE
    history.py         the thinned loss curve a job keeps (GET /jobs/{id}/history)
    execute.py         run one claimed job: inputs -> its kind -> progress, preview, result
    kinds/             the registry and the kinds: gatys, training, video
    stored_inputs.py   decoding a job's stored inputs, with a clear error when they cannot work
    style_networks.py  the instant-style networks a video job borrows
    memory.py          out-of-memory as a job failure with a clear message
    lease.py           worker ids and lease renewal
    sweeper.py         requeue or fail jobs whose lease lapsed
    runners/           embedded thread (local) or Celery worker (celery_worker)
    runtime.py         what an API process owns: store, runner or broker, sweeper
"""

from app.jobs.models import TERMINAL_STATES, Job, JobState
from app.jobs.store import JobNotFound, JobStore, NewJob

__all__ = ["TERMINAL_STATES", "Job", "JobNotFound", "JobState", "JobStore", "NewJob"]
