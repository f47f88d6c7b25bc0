"""Schema migrations: a database made by Atelier 0.1 (tables from `create_all`, no Alembic)
upgrades in place on SQLite and PostgreSQL with its jobs, blobs and user styles intact."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
import torch
from alembic import command
from sqlalchemy import create_engine

from app.core.database import _config, current_revision, head_revision, upgrade_schema
from app.jobs.models import BlobKind, JobState
from app.jobs.store import JobStore
from app.styles.catalog import NetworkFamily
from app.styles.user_styles import NewUserStyle, UserStyleStore

# The 0.1 tables exactly as its models declared them (frozen here: the models have moved on).
LEGACY = sa.MetaData()
sa.Table(
    "atelier_jobs",
    LEGACY,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(80), index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("backbone", sa.String(32), nullable=False),
    sa.Column("device", sa.String(32)),
    sa.Column("style_count", sa.Integer, nullable=False),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("content_loss", sa.Float),
    sa.Column("style_loss", sa.Float),
    sa.Column("tv_loss", sa.Float),
    sa.Column("eta_s", sa.Float),
    sa.Column("has_preview", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires", sa.DateTime),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("timings", sa.JSON),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Index("ix_atelier_jobs_state_created", "state", "created_at"),
    sa.Index("ix_atelier_jobs_state_lease", "state", "lease_expires"),
)
sa.Table(
    "atelier_job_blobs",
    LEGACY,
    sa.Column(
        "job_id",
        sa.String(32),
        sa.ForeignKey("atelier_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("media_type", sa.String(32), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
sa.Table(
    "user_styles",
    LEGACY,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("owner", sa.String(100), index=True),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("thumbnail", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

JOB_ID = "a" * 32
VECTOR = np.arange(100, dtype=np.float32) / 100


def make_legacy_database(url: str) -> None:
    engine = create_engine(url)
    LEGACY.create_all(engine)
    tables = LEGACY.tables
    with engine.begin() as connection:
        connection.execute(
            tables["atelier_jobs"].insert(),
            {
                "id": JOB_ID, "owner": "key-a", "state": "succeeded",
                "options": {"iterations": 8, "size": 64}, "backbone": "efficientnet-lite0",
                "device": "cpu", "style_count": 1, "iteration": 8, "total": 8,
                "content_loss": 1.0, "style_loss": 2.0, "tv_loss": 0.5, "eta_s": 0.0,
                "has_preview": False, "attempts": 1, "cancel_requested": False,
                "timings": {"total_s": 1.5}, "created_at": datetime(2026, 11, 1, 12, 0),
                "finished_at": datetime(2026, 11, 1, 12, 1),
            },
        )  # fmt: skip
        connection.execute(
            tables["atelier_job_blobs"].insert(),
            [
                {"job_id": JOB_ID, "kind": "content", "position": 0, "media_type": "image/png",
                 "data": b"content-png"},
                {"job_id": JOB_ID, "kind": "result", "position": 0, "media_type": "image/png",
                 "data": b"result-png"},
            ],
        )  # fmt: skip
        connection.execute(
            tables["user_styles"].insert(),
            {
                "name": "my-painting", "title": "My Painting", "description": "",
                "owner": "key-a", "vector": VECTOR.tobytes(), "thumbnail": b"jpeg",
                "created_at": datetime(2026, 11, 2, tzinfo=UTC),
            },
        )  # fmt: skip
    engine.dispose()


def test_a_legacy_database_upgrades_in_place_with_its_rows(store_url: str, helpers) -> None:
    make_legacy_database(store_url)
    store = JobStore(store_url)
    assert current_revision(store.engine) is None
    store.create_schema()
    assert current_revision(store.engine) == head_revision()

    job = store.get(JOB_ID)
    assert (job.kind, job.state, job.owner, job.iteration) == ("gatys", JobState.succeeded,
                                                               "key-a", 8)  # fmt: skip
    assert job.options == {"iterations": 8, "size": 64} and job.timings == {"total_s": 1.5}
    assert job.checkpoint_iteration == 0 and job.metrics is None
    assert store.blobs(JOB_ID, BlobKind.content) == [b"content-png"]
    result = store.stored_blob(JOB_ID, BlobKind.result)
    assert result is not None and result.data == b"result-png" and result.width is None

    style = UserStyleStore(store.engine).get("my-painting")
    assert style is not None and style.network is NetworkFamily.arbitrary and style.owner == "key-a"
    assert style.style_vector is not None
    np.testing.assert_array_equal(style.style_vector.numpy(), VECTOR)

    # The upgraded database takes jobs of the new kinds.
    created = store.create(helpers.job())
    assert store.get(created.id).kind == "gatys"
    store.dispose()


def test_a_new_database_is_created_at_head_and_upgrading_again_changes_nothing(
    store_url: str,
) -> None:
    engine = create_engine(store_url)
    upgrade_schema(engine)
    tables = set(sa.inspect(engine).get_table_names())
    expected = {"atelier_jobs", "atelier_job_blobs", "atelier_job_history", "user_styles"}
    assert expected | {"alembic_version"} <= tables
    columns = {c["name"] for c in sa.inspect(engine).get_columns("atelier_jobs")}
    assert {"kind", "metrics", "checkpoint_iteration"} <= columns
    upgrade_schema(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _styles_at_0002(url: str) -> sa.Engine:
    """A database at revision 0002 whose user styles use one global name space."""
    engine = create_engine(url)
    with engine.begin() as connection:
        config = _config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    rows = [("key:aaaa", "shared-name"), ("ip:10.0.0.7", "from-keys-off"), (None, "from-cli")]
    with engine.begin() as connection:
        for owner, name in rows:
            connection.execute(
                sa.text(
                    "INSERT INTO user_styles (name, title, description, owner, engine, vector, "
                    "thumbnail, created_at) VALUES (:name, 'T', '', :owner, 'arbitrary', :vector, "
                    ":thumb, :created)"
                ),
                {"name": name, "owner": owner, "vector": VECTOR.tobytes(), "thumb": b"jpeg",
                 "created": datetime(2026, 11, 2, tzinfo=UTC)},
            )  # fmt: skip
    return engine


def test_user_styles_move_into_their_keys_namespace(store_url: str) -> None:
    engine = _styles_at_0002(store_url)
    upgrade_schema(engine)
    with engine.connect() as connection:
        rows = set(connection.execute(sa.text("SELECT namespace, name, owner FROM user_styles")))
    assert rows == {
        ("key:aaaa", "shared-name", "key:aaaa"),
        ("", "from-keys-off", "ip:10.0.0.7"),
        ("", "from-cli", None),
    }
    styles = UserStyleStore(engine)
    assert styles.get("shared-name", "key:bbbb") is None  # another key sees nothing
    owned = styles.get("shared-name", "key:aaaa")
    assert owned is not None and owned.owner == "key:aaaa"
    # ...and may now create its own style of that name.
    added = styles.add(
        NewUserStyle(
            name="shared-name", title="B's", description="", owner="key:bbbb",
            thumbnail=b"jpeg-b", vector=torch.from_numpy(VECTOR),
        )
    )  # fmt: skip
    assert styles.thumbnail(added) == b"jpeg-b" and styles.thumbnail(owned) == b"jpeg"
    assert styles.remove(added) and styles.get("shared-name", "key:aaaa") is not None
    engine.dispose()
