"""Runners take queued jobs and execute them: `local` inside the API process, `celery_worker`
on worker hosts fed by a broker. Both claim through the store and run `execute_job`, so they
differ only in how they learn that a job is waiting."""
