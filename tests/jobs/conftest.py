"""Job fixtures: a JobStore on SQLite and on PostgreSQL, a controllable clock, small images,
settings for whole apps, a private Redis database, and HTTP helpers.

The PostgreSQL database `test` is shared with other suites, so every store gets its own schema
(reached through `search_path` in the URL, so any process given the URL sees only it), dropped
afterwards. Set ATELIER_TEST_POSTGRES_URL to point elsewhere. Redis is shared the same way: each
suite uses its own database number, flushed before and after.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
import redis
from conftest import assert_problem, make_settings
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.core.config import Settings
from app.gatys.optimize import GatysOptions
from app.jobs.kinds.gatys_options import options_to_json
from app.jobs.store import JobStore, NewJob

T = TypeVar("T")

POSTGRES_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
REDIS_URL = os.environ.get("ATELIER_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@dataclass
class FakeClock:
    """A clock tests move by hand, so lease expiry needs no sleeping."""

    now: datetime = field(default_factory=lambda: datetime(2030, 1, 1, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A textured RGB PNG (random noise over a gradient, so Gram matrices are not trivial)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), xx * 0 + 128])
    pixels = np.clip(base.transpose(1, 2, 0) + rng.normal(0, 30, (height, width, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def new_job(
    *,
    owner: str | None = "tester",
    content: bytes | None = None,
    styles: list[bytes] | None = None,
    backbone: str = "efficientnet-lite0",
    **options: object,
) -> NewJob:
    """A NewJob for a 64x48 content and one 64 px style, with tiny default options."""
    values: dict[str, object] = {"iterations": 8, "size": 64, "optimizer": "adam", **options}
    gatys = GatysOptions(**values)  # type: ignore[arg-type]
    return NewJob.gatys(
        options=options_to_json(gatys),
        backbone=backbone,
        total=gatys.iterations,
        content=content if content is not None else png_bytes(64, 48, seed=1),
        styles=styles if styles is not None else [png_bytes(64, 64, seed=2)],
        owner=owner,
    )


def _reachable_postgres() -> str:
    configured = os.environ.get("ATELIER_TEST_POSTGRES_URL")
    errors = []
    for url in [configured] if configured else POSTGRES_CANDIDATES:
        engine = create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as connection:
                connection.execute(text("select 1"))
            return url
        except OperationalError as exc:
            errors.append(f"{make_url(url).render_as_string(hide_password=True)}: {exc.orig}")
        finally:
            engine.dispose()
    pytest.fail("PostgreSQL is required for the job tests but unreachable:\n" + "\n".join(errors))


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    return _reachable_postgres()


@contextmanager
def fresh_schema(admin_url: str, prefix: str) -> Iterator[str]:
    """A URL whose connections see only a new schema (the `test` database is shared), dropped
    with everything in it afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_schema_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_schema(postgres_admin_url, "atelier_test") as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[JobStore]:
    """A store with a clock the test controls, on each database."""
    job_store = JobStore(store_url, clock=clock)
    job_store.create_schema()
    yield job_store
    job_store.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[JobStore]:
    """A store on the real clock, for tests that run the engine against it."""
    job_store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job_store.create_schema()
    yield job_store
    job_store.dispose()


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


# Tiny-job timings: leases lapse, sweeps and idle polls happen within a second or so. fp32, so
# a job's result is reproduced exactly by rerunning the optimisation by hand (bf16 autocast
# results depend on the thread count of the process that ran them).
JOB_TEST_SETTINGS: dict[str, object] = {
    "gatys_backbone": "efficientnet-lite0",
    "gatys_precision": "fp32",
    "job_lease_seconds": 5.0,
    "job_sweep_interval_s": 0.5,
    "job_poll_interval_s": 0.2,
}


@pytest.fixture
def app_settings(tmp_path: Path, cache_dir: Path) -> Callable[..., Settings]:
    """`app_settings(**overrides)`: settings for a whole app with tiny-job timings. Every call
    shares one data dir, so a second app on them is a restart of the first."""

    def build(**overrides: object) -> Settings:
        values = {**JOB_TEST_SETTINGS, "job_max_queued_per_client": 50, **overrides}
        return make_settings(tmp_path / "app", cache_dir, **values)

    return build


@pytest.fixture
def private_redis() -> Iterator[Callable[[int], str]]:
    """`private_redis(db)`: the URL of Redis database `db`, flushed now and after the test.
    Callers pick a number no other suite uses (test_celery_scaleout takes 7)."""
    used: list[redis.Redis] = []

    def claim(db: int) -> str:
        url = f"{REDIS_URL}/{db}"
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.fail(f"Redis is required for this test but unreachable at {url}: {exc}")
        client.flushdb()
        used.append(client)
        return url

    yield claim
    for client in used:
        client.flushdb()
        client.close()


def submit_job(client: TestClient, content: bytes, style: bytes, **fields: str) -> httpx.Response:
    """POST /jobs with one style image; tiny adam defaults unless `fields` say otherwise."""
    files = [
        ("content", ("photo.png", content, "image/png")),
        ("style", ("style.png", style, "image/png")),
    ]
    data = {"iterations": "6", "size": "64", "optimizer": "adam", **fields}
    return client.post("/jobs", files=files, data=data)


@pytest.fixture
def helpers() -> type[Helpers]:
    """Builders and a bounded poll loop, handed to tests as a fixture (conftest is not a module
    tests should import)."""
    return Helpers


class Helpers:
    png = staticmethod(png_bytes)
    job = staticmethod(new_job)
    wait_for = staticmethod(wait_for)
    submit = staticmethod(submit_job)
    problem = staticmethod(assert_problem)


WORKER_REPO = Path(__file__).resolve().parents[2]


class WorkerPool:
    """Celery worker subprocesses, each with its own log; every one is killed at teardown."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.jobs.runners.celery_worker"],
            cwd=WORKER_REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def ready(self) -> bool:
        """Every worker has logged that it consumes (imports and connections are done)."""
        return all(
            " ready." in (self.logs / f"worker-{i}.log").read_text(errors="replace")
            for i in range(len(self.procs))
        )

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [proc for proc in self.procs if proc.poll() is None]

    def ensure_one(self) -> subprocess.Popen[bytes]:
        alive = self.alive()
        return alive[0] if alive else self.start()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

    def tails(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("worker-*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)
