"""Soak tests: a burst of tiny jobs with faults thrown in (random cancels, a restart, a SIGKILLed
worker), then a strict look at the end state, in both deployments.

What "strict" means: every job ended, in the state its history implies (a cancel wins unless the
job had already succeeded when DELETE answered); every result has the right size and is this
job's own (its mean colour is nearest its content's, and the engine run by hand on the job's
stored inputs gives the same image); the database holds exactly the blobs the states imply and
nothing else; no temporary files are left in the data dir.

Randomness is seeded, so a failure replays; bounded polling everywhere, so nothing hangs.
"""

from __future__ import annotations

import colorsys
import io
import os
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.core.config import Settings
from app.gatys.optimize import GatysOptions, run
from app.imaging.decode import decode_image
from app.jobs.execute import BACKBONES
from app.jobs.kinds import gatys as gatys_kind
from app.jobs.kinds.gatys_options import options_from_json
from app.jobs.models import TERMINAL_STATES, BlobKind, Job, JobBlob, JobState
from app.jobs.store import JobStore
from app.main import create_app
from app.perceptual.backbones import Backbone
from tests.jobs.conftest import WorkerPool

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 20250611
REDIS_DB = 8  # test_celery_scaleout uses 7, test_outages 9
CONTENT_W, CONTENT_H = 64, 48
LONG_RUN = 1000  # iterations no test waits for: only a cancel ends such a job in time
# A job caught mid-run by a restart or a kill: few iterations (many would drift its colour away
# from its content's) but large, so each takes long enough (~0.1 s) to be caught.
VICTIM_SIZE = 512
STEP_S = 0.05
BURST_S = 50.0
CELERY_BURST_S = 90.0
READY_S = 60.0

CancelMode = Literal["none", "queued", "running"]


@dataclass
class Planned:
    """One job of the burst: what is submitted, what the soak does to it, what came back."""

    index: int
    colour: tuple[int, int, int]
    content: bytes
    fields: dict[str, str]
    cancel: CancelMode = "none"
    cancel_at: int = 1  # a running cancel fires once the job has done this many iterations
    job_id: str = ""
    cancel_answer: str | None = None  # the state DELETE answered with

    @property
    def iterations(self) -> int:
        return int(self.fields["iterations"])

    def expected_state(self) -> JobState:
        """A DELETE that found the job queued or running must end it cancelled, even if the
        worker was about to finish; one that found it finished changed nothing."""
        if self.cancel_answer is None:
            return JobState.succeeded
        answered = JobState(self.cancel_answer)
        return answered if answered in TERMINAL_STATES else JobState.cancelled


def colour_content(colour: tuple[int, int, int], seed: int) -> bytes:
    """A photo-like image with one dominant colour: grey-level texture over a flat colour, so
    the result of a few iterations still has that colour on average."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CONTENT_H, 0:CONTENT_W].astype(np.float32)
    texture = 30.0 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0.0, 8.0, xx.shape)
    pixels = np.asarray(colour, np.float32)[None, None, :] + texture[..., None]
    return png(np.clip(pixels, 0, 255).astype(np.uint8))


def grey_style(seed: int) -> bytes:
    """A neutral texture: strokes without a palette, so it cannot pull results towards one
    another's colours."""
    rng = np.random.default_rng(seed)
    grey = rng.normal(128.0, 50.0, (CONTENT_W, CONTENT_W))
    grey[::8, :] = 30.0
    return png(np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def plan_burst(rng: random.Random, count: int, slow: set[int], cancels: int) -> list[Planned]:
    """`count` tiny jobs with distinct colours and random sizes, iterations and seeds; jobs in
    `slow` take longer (they get killed or outlive a restart); `cancels` others, picked at
    random, are cancelled either at once (still queued) or while running (long, so the cancel
    surely lands mid-run)."""
    plans = []
    for index in range(count):
        red, green, blue = colorsys.hsv_to_rgb(index / count, 0.75, 0.8)
        colour = (round(255 * red), round(255 * green), round(255 * blue))
        fields = {
            "iterations": str(rng.randint(4, 8)),
            "size": str(rng.choice([48, 56, 64])),
            "optimizer": "adam",
            "seed": str(rng.randrange(2**31)),
            "preview_every": str(rng.choice([0, 2])),
        }
        plans.append(Planned(index, colour, colour_content(colour, seed=index), fields))
    for index in slow:
        plans[index].fields.update(size=str(VICTIM_SIZE), iterations="8")
    for chosen in rng.sample([p for p in plans if p.index not in slow], cancels):
        chosen.cancel = "queued" if rng.random() < 0.5 else "running"
        chosen.cancel_at = rng.randint(1, 5)
        if chosen.cancel == "running":
            chosen.fields["iterations"] = str(LONG_RUN)
    return plans


def submit(client: TestClient, plan: Planned, style: bytes) -> None:
    """Submit over HTTP; a job planned to be cancelled while queued is cancelled at once."""
    files = [
        ("content", ("photo.png", plan.content, "image/png")),
        ("style", ("style.png", style, "image/png")),
    ]
    response = client.post("/jobs", files=files, data=plan.fields)
    assert response.status_code == 202, response.text
    plan.job_id = response.json()["id"]
    if plan.cancel == "queued":
        cancel(client, plan)


def cancel(client: TestClient, plan: Planned) -> None:
    response = client.delete(f"/jobs/{plan.job_id}")
    assert response.status_code == 200, response.text
    plan.cancel_answer = response.json()["state"]


def due_running_cancels(client: TestClient, rows: dict[str, Job], plans: list[Planned]) -> None:
    """Fire each running-cancel whose job reached its planned iteration (or already ended)."""
    for plan in plans:
        row = rows.get(plan.job_id)
        if plan.cancel != "running" or plan.cancel_answer is not None or row is None:
            continue
        if row.state in TERMINAL_STATES or (
            row.state is JobState.running and row.iteration >= plan.cancel_at
        ):
            cancel(client, plan)


def rows_of(store: JobStore) -> dict[str, Job]:
    return {job.id: job for job in store.list_jobs(limit=100).items}


def describe(rows: dict[str, Job]) -> str:
    return "; ".join(
        f"{job.id[:8]} {job.state.value} it={job.iteration}/{job.total} att={job.attempts}"
        for job in rows.values()
    )


# --- end-state checks -------------------------------------------------------------------------


def check_end_state(
    store: JobStore,
    client: TestClient,
    plans: list[Planned],
    settings: Settings,
    *,
    attempts: dict[str, int],
    reproduce_tolerance: float,
) -> None:
    """Every job ended as its history implies, with its own correctly sized result."""
    rows = rows_of(store)
    assert set(rows) == {plan.job_id for plan in plans}, "jobs appeared or vanished"
    stuck = [job for job in rows.values() if job.state not in TERMINAL_STATES]
    assert not stuck, f"jobs not finished: {describe(rows)}"
    content_means = np.array([p.colour for p in plans], np.float64)
    backbone = BACKBONES.get(settings.gatys_backbone, settings.models_dir, torch.device("cpu"))
    for plan in plans:
        job = rows[plan.job_id]
        label = f"job {plan.index} ({plan.cancel}, DELETE saw {plan.cancel_answer})"
        assert job.state is plan.expected_state(), f"{label}: {job.state} ({job.error})"
        assert job.lease_owner is None and job.finished_at is not None, label
        result = client.get(f"/jobs/{plan.job_id}/result", params={"format": "png"})
        if job.state is not JobState.succeeded:
            assert result.status_code == 409, label
            if plan.iterations == LONG_RUN:
                assert job.iteration < job.total, f"{label}: the cancel did not stop the run"
            continue
        assert job.attempts == attempts.get(plan.job_id, 1), f"{label}: {job.attempts} attempts"
        assert job.iteration == job.total == plan.iterations, label
        image = decode(result.content)
        side = int(plan.fields["size"])
        assert image.shape == (round(CONTENT_H * side / CONTENT_W), side, 3), label
        mean = image.reshape(-1, 3).mean(axis=0)
        nearest = int(np.argmin(np.linalg.norm(content_means - mean, axis=1)))
        assert nearest == plan.index, f"{label}: its colour {mean} is job {nearest}'s"
        pixels = settings.max_pixels
        (content,) = store.blobs(plan.job_id, BlobKind.content)
        again = run(
            decode_image(content, max_pixels=pixels).pixels,
            [
                decode_image(style, max_pixels=pixels).pixels
                for style in store.blobs(plan.job_id, BlobKind.style)
            ],
            options_from_json(job.options).effective,
            backbone,
        )
        difference = np.abs(again.astype(np.int16) - image.astype(np.int16)).mean()
        assert difference <= reproduce_tolerance, f"{label}: differs from a rerun by {difference}"


def check_storage(url: str, data_dir: Path) -> None:
    """Blobs exactly as the states imply, no orphans, and no temporary files. Run after every
    process using the database has stopped, so SQLite's WAL must have been folded back."""
    store = JobStore(url)
    try:
        with store.engine.connect() as connection:
            orphans = connection.scalar(
                select(func.count())
                .select_from(JobBlob)
                .where(JobBlob.job_id.not_in(select(Job.id)))
            )
            assert orphans == 0, f"{orphans} blob rows belong to no job"
            jobs = connection.execute(
                select(Job.id, Job.state, Job.has_preview, Job.style_count)
            ).all()
            blobs = connection.execute(select(JobBlob.job_id, JobBlob.kind, JobBlob.position)).all()
    finally:
        store.dispose()
    for job_id, state, has_preview, style_count in jobs:
        kinds = sorted((kind, position) for owner, kind, position in blobs if owner == job_id)
        expected = [(BlobKind.content.value, 0)]
        expected += [(BlobKind.style.value, position) for position in range(style_count)]
        if has_preview:
            expected.append((BlobKind.preview.value, 0))
        if JobState(state) is JobState.succeeded:
            expected.append((BlobKind.result.value, 0))
        assert kinds == sorted(expected), f"job {job_id} ({state}) has blobs {kinds}"
    # rglob does not follow the `cache` link: that folder is shared by the whole session.
    leftovers = [
        path.name
        for path in data_dir.rglob("*")
        if path.name.endswith(("-wal", "-shm", "-journal", ".tmp", ".part"))
        or path.name.startswith(("tmp", ".tmp"))
    ]
    assert not leftovers, f"temporary files left in the data dir: {leftovers}"


# --- embedded ---------------------------------------------------------------------------------


def test_a_cancel_during_the_last_iteration_wins_over_the_result(
    app_settings: Callable[..., Settings], helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule `expected_state` relies on, without the luck of timing: the cancel is requested
    after the engine's last iteration, before the worker stores the result."""
    stores: list[JobStore] = []

    def engine_then_cancel(
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        options: GatysOptions,
        backbone: Backbone,
        **kwargs: Any,
    ) -> np.ndarray:
        image = run(content, styles, options, backbone, **kwargs)
        (job,) = stores[0].list_jobs(state=JobState.running).items
        assert stores[0].request_cancel(job.id).state is JobState.running
        return image

    monkeypatch.setattr(gatys_kind, "run", engine_then_cancel)
    with TestClient(create_app(app_settings())) as client:
        stores.append(client.app.state.jobs.store)
        fields = {"size": "48", "iterations": "4", "optimizer": "adam"}
        plan = Planned(0, (200, 60, 60), colour_content((200, 60, 60), seed=0), fields)
        submit(client, plan, grey_style(seed=1))

        ended = helpers.wait_for(
            lambda: (job := stores[0].get(plan.job_id)).state in TERMINAL_STATES and job,
            60,
            "the job to end",
        )
        assert (ended.state, ended.iteration) == (JobState.cancelled, 4), ended.error
        assert stores[0].blob(plan.job_id, BlobKind.result) is None
        assert client.get(f"/jobs/{plan.job_id}/result").status_code == 409


class Service:
    """The app under test, which the soak stops and starts again on the same data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack: ExitStack | None = None
        self.client: TestClient | None = None

    def start(self) -> TestClient:
        stack = ExitStack()
        self.client = stack.enter_context(TestClient(create_app(self.settings)))
        self._stack = stack
        return self.client

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.client = None, None

    @property
    def store(self) -> JobStore:
        assert self.client is not None
        return self.client.app.state.jobs.store


def test_embedded_burst_with_cancels_and_a_restart(
    app_settings: Callable[..., Settings], helpers
) -> None:
    rng = random.Random(SEED)
    victim = rng.randint(1, 3)
    plans = plan_burst(rng, 10, {victim}, cancels=4)
    first_half, second_half = plans[:6], plans[6:]
    style = grey_style(seed=99)
    settings = app_settings()
    url = settings.job_database_url
    service = Service(settings)
    restarted = False

    def restart() -> None:
        """Stop mid-run: the victim must go back to the queue, its attempt not counted."""
        nonlocal restarted
        service.stop()
        store = JobStore(url)
        try:
            rows = rows_of(store)
        finally:
            store.dispose()
        assert not [j for j in rows.values() if j.state is JobState.running], describe(rows)
        handed_back = rows[plans[victim].job_id]
        assert (handed_back.state, handed_back.attempts) == (JobState.queued, 0), describe(rows)
        client = service.start()
        for plan in second_half:
            submit(client, plan, style)
        restarted = True

    def step() -> bool:
        assert service.client is not None
        rows = rows_of(service.store)
        due_running_cancels(service.client, rows, plans)
        victim_row = rows[plans[victim].job_id]
        if not restarted and victim_row.state is JobState.running:
            restart()
            return False
        return restarted and all(
            job.state in TERMINAL_STATES for job in rows_of(service.store).values()
        )

    try:
        client = service.start()
        for plan in first_half:
            submit(client, plan, style)
        helpers.wait_for(step, BURST_S, "the burst to settle", step=STEP_S)
        # The seed must exercise both kinds of cancel: one that found its job queued, one
        # that had to stop a running job.
        answers = {plan.cancel_answer for plan in plans}
        assert {"cancelled", "running"} <= answers, [(p.cancel, p.cancel_answer) for p in plans]
        assert service.client is not None
        check_end_state(
            service.store, service.client, plans, settings, attempts={}, reproduce_tolerance=0.0
        )
    finally:
        service.stop()
    check_storage(url, settings.data_dir)


# --- Celery -----------------------------------------------------------------------------------


def worker_env(settings: Settings) -> dict[str, str]:
    """The parent's environment minus its ATELIER_* variables, plus the settings workers need."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ATELIER_")}
    env.update(
        PYTHONPATH=str(REPO),
        ATELIER_BROKER_URL=str(settings.broker_url),
        ATELIER_DATABASE_URL=str(settings.database_url),
        ATELIER_DATA_DIR=str(settings.data_dir),
        ATELIER_MODELS_DIR=str(settings.models_dir),
        ATELIER_GATYS_BACKBONE=settings.gatys_backbone,
        ATELIER_GATYS_PRECISION=settings.gatys_precision,
        ATELIER_JOB_LEASE_SECONDS=str(settings.job_lease_seconds),
        ATELIER_JOB_SWEEP_INTERVAL_S=str(settings.job_sweep_interval_s),
        ATELIER_JOB_MAX_ATTEMPTS=str(settings.job_max_attempts),
        ATELIER_WARMUP="false",
    )
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerPool]]:
    pools: list[WorkerPool] = []

    def make(settings: Settings) -> WorkerPool:
        logs = tmp_path / "worker-logs"
        logs.mkdir(exist_ok=True)
        pools.append(WorkerPool(worker_env(settings), logs))
        return pools[-1]

    yield make
    for pool in pools:
        pool.kill_all()


def test_celery_burst_with_cancels_and_a_killed_worker(
    app_settings: Callable[..., Settings],
    postgres_schema_url: str,
    private_redis: Callable[[int], str],
    workers: Callable[[Settings], WorkerPool],
    helpers,
) -> None:
    rng = random.Random(SEED + 1)
    plans = plan_burst(rng, 6, {0}, cancels=2)
    target = plans[0]
    style = grey_style(seed=98)
    settings = app_settings(
        database_url=postgres_schema_url,
        broker_url=private_redis(REDIS_DB),
        embedded_worker=False,
        job_lease_seconds=3.0,
        job_max_attempts=2,
    )
    pool = workers(settings)
    procs = [pool.start(), pool.start()]
    pids = {proc.pid for proc in procs}
    killed: dict[str, int] = {}

    def step(client: TestClient, store: JobStore) -> bool:
        rows = rows_of(store)
        due_running_cancels(client, rows, plans)
        row = rows[target.job_id]
        if not killed and row.state is JobState.running and row.iteration >= 1:
            assert row.lease_owner is not None
            pid = int(row.lease_owner.split(":")[1])
            assert pid in pids, f"job held by {row.lease_owner}, not one of our workers"
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
        if killed and row.state is JobState.running and row.attempts == 2 and row.lease_owner:
            killed["rerun_pid"] = int(row.lease_owner.split(":")[1])
        return bool(killed) and all(job.state in TERMINAL_STATES for job in rows.values())

    with TestClient(create_app(settings)) as client:
        assert client.app.state.jobs.runners == [], "the API must not run jobs itself"
        store: JobStore = client.app.state.jobs.store
        try:
            helpers.wait_for(pool.ready, READY_S, "both workers to be ready", step=0.2)
            for plan in plans:
                submit(client, plan, style)
            helpers.wait_for(
                lambda: step(client, store), CELERY_BURST_S, "the burst to settle", step=STEP_S
            )
            assert killed.get("rerun_pid") in pids - {killed["pid"]}, killed
            assert "running" in {plan.cancel_answer for plan in plans}, "no cancel hit a run"
            check_end_state(
                store,
                client,
                plans,
                settings,
                attempts={target.job_id: 2},
                reproduce_tolerance=0.5,  # other processes; exact in practice
            )
        except BaseException:
            print(pool.tails())
            raise
        finally:
            pool.kill_all()
    check_storage(postgres_schema_url, settings.data_dir)
