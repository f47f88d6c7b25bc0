"""User styles, in the job database: paintings registered as style vectors, and networks
trained by Atelier's training jobs.

A registered painting keeps only its 100-number vector and a thumbnail (not the painting), a few
KB rendered by the arbitrary-style transformer. A trained style keeps its TransformerNet weights
(fp16 safetensors, about 3 MB) and is served by the fast path. Storing both beside the jobs means
every API host sees the same styles and they survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from sqlalchemy import DateTime, Engine, LargeBinary, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.jobs.schema import upgrade_schema
from app.styles.catalog import Engine as StyleEngine
from app.styles.catalog import Style, StyleOrigin

ATTRIBUTION = "registered by a user from their own painting (Ghiasi et al. 2017 style vector)"
TRAINED_ATTRIBUTION = "trained by Atelier on the user's painting (Johnson et al. 2016)"


class UserStylesBase(DeclarativeBase):
    pass


class UserStyleRow(UserStylesBase):
    __tablename__ = "user_styles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    engine: Mapped[str] = mapped_column(String(32), default="arbitrary", server_default="arbitrary")
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    weights: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DuplicateStyle(ValueError):
    """A user style with that name already exists."""


@dataclass(frozen=True)
class NewUserStyle:
    """A style to save: either a painting's `vector` or a trained network's `weights`."""

    name: str
    title: str
    description: str
    owner: str | None
    thumbnail: bytes
    vector: torch.Tensor | None = None
    weights: bytes | None = None

    def __post_init__(self) -> None:
        if (self.vector is None) == (self.weights is None):
            raise ValueError("a user style has either a style vector or trained weights")


def to_style(row: UserStyleRow) -> Style:
    if row.engine == StyleEngine.transformer:
        return Style(
            name=row.name,
            title=row.title,
            description=row.description,
            source=TRAINED_ATTRIBUTION,
            license="owned by the user who trained it",
            engine=StyleEngine.transformer,
            origin=StyleOrigin.user,
            weights=row.weights,
            owner=row.owner,
        )
    assert row.vector is not None
    vector = torch.from_numpy(np.frombuffer(row.vector, dtype=np.float32).copy())
    return Style(
        name=row.name,
        title=row.title,
        description=row.description,
        source=ATTRIBUTION,
        license="owned by the user who registered it",
        engine=StyleEngine.arbitrary,
        origin=StyleOrigin.user,
        style_vector=vector,
        owner=row.owner,
    )


class UserStyleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._schema_ready = False

    def create_schema(self) -> None:
        """Create or migrate the tables; they live in the job database's migrations. Called
        before each use, so it does the work once per store."""
        if self._schema_ready:
            return
        upgrade_schema(self.engine)
        self._schema_ready = True

    def visible_to(self, owner: str | None) -> list[Style]:
        """Styles `owner` may use; `owner=None` (no API keys configured) sees them all."""
        query = select(UserStyleRow).order_by(UserStyleRow.created_at)
        if owner is not None:
            query = query.where(UserStyleRow.owner == owner)
        with Session(self.engine) as session:
            return [to_style(row) for row in session.scalars(query)]

    def add(self, new: NewUserStyle) -> Style:
        vector = None
        if new.vector is not None:
            vector = new.vector.detach().cpu().to(torch.float32).numpy().tobytes()
        row = UserStyleRow(
            name=new.name,
            title=new.title,
            description=new.description,
            owner=new.owner,
            engine=StyleEngine.arbitrary if vector is not None else StyleEngine.transformer,
            vector=vector,
            weights=new.weights,
            thumbnail=new.thumbnail,
            created_at=datetime.now(UTC),
        )
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError as exc:
                raise DuplicateStyle(new.name) from exc
            return to_style(row)

    def get(self, name: str) -> Style | None:
        with Session(self.engine) as session:
            row = session.get(UserStyleRow, name)
            return None if row is None else to_style(row)

    def thumbnail(self, name: str) -> bytes | None:
        with Session(self.engine) as session:
            return session.scalar(select(UserStyleRow.thumbnail).where(UserStyleRow.name == name))

    def remove(self, name: str) -> bool:
        with Session(self.engine) as session:
            result = session.execute(delete(UserStyleRow).where(UserStyleRow.name == name))
            session.commit()
            return bool(result.rowcount)
