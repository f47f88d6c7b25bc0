"""User-registered styles: a painting's style vector saved under a name, in the job database.

Only the 100-number vector and a thumbnail are kept (not the painting), so a registered style
costs a few KB and is rendered by the arbitrary-style transformer like an uploaded painting.
Storing them beside the jobs means every API host sees the same styles and they survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from sqlalchemy import DateTime, Engine, LargeBinary, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.styles.catalog import Engine as StyleEngine
from app.styles.catalog import Style, StyleOrigin

ATTRIBUTION = "registered by a user from their own painting (Ghiasi et al. 2017 style vector)"


class UserStylesBase(DeclarativeBase):
    pass


class UserStyleRow(UserStylesBase):
    __tablename__ = "user_styles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DuplicateStyle(ValueError):
    """A user style with that name already exists."""


@dataclass(frozen=True)
class NewUserStyle:
    name: str
    title: str
    description: str
    owner: str | None
    vector: torch.Tensor
    thumbnail: bytes


def to_style(row: UserStyleRow) -> Style:
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
        """Called before each use, so it does the work once per store."""
        if self._schema_ready:
            return
        UserStylesBase.metadata.create_all(self.engine)
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
            vector=new.vector.detach().cpu().to(torch.float32).numpy().tobytes(),
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
