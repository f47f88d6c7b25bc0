"""User styles, in the job database: paintings registered as style vectors, and networks
trained by Atelier's training jobs.

A registered painting keeps only its 100-number vector and a thumbnail (not the painting), a few
KB rendered by the arbitrary-style transformer. A trained style keeps its TransformerNet weights
(fp16 safetensors, about 3 MB) and is served by the fast path. Storing both beside the jobs means
every API host sees the same styles and they survive restarts.

Names are unique per API key (a `namespace`), not across the service: with a global name, key B
registering a name key A already used would learn from the conflict that A's private style
exists, and could take names first. With API keys off there is one trusted user and one shared
namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from sqlalchemy import DateTime, Engine, LargeBinary, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql import ColumnElement

from app.core.database import upgrade_schema
from app.styles.catalog import NetworkFamily, Style, StyleOrigin

ATTRIBUTION = "registered by a user from their own painting (Ghiasi et al. 2017 style vector)"
TRAINED_ATTRIBUTION = "trained by Atelier on the user's painting (Johnson et al. 2016)"


class UserStylesBase(DeclarativeBase):
    pass


# Owners that are API keys (app.api.access: `key:<digest>`); other owners (client addresses,
# when keys are off) share the namespace ''.
KEY_OWNER_PREFIX = "key:"
SHARED_NAMESPACE = ""


def namespace_of(owner: str | None) -> str:
    """The namespace a style created by `owner` (a client id, or a `Client.scope`) lives in."""
    return owner if owner and owner.startswith(KEY_OWNER_PREFIX) else SHARED_NAMESPACE


class UserStyleRow(UserStylesBase):
    __tablename__ = "user_styles"

    namespace: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    # The column keeps its first name; it holds a NetworkFamily value.
    network: Mapped[str] = mapped_column(
        "engine", String(32), default="arbitrary", server_default="arbitrary"
    )
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    weights: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DuplicateStyle(ValueError):
    """The owner already has a style with that name."""


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
    if row.network == NetworkFamily.transformer:
        return Style(
            name=row.name,
            title=row.title,
            description=row.description,
            source=TRAINED_ATTRIBUTION,
            license="owned by the user who trained it",
            network=NetworkFamily.transformer,
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
        network=NetworkFamily.arbitrary,
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
            query = query.where(UserStyleRow.namespace == namespace_of(owner))
        with Session(self.engine) as session:
            return [to_style(row) for row in session.scalars(query)]

    def add(self, new: NewUserStyle) -> Style:
        vector = None
        if new.vector is not None:
            vector = new.vector.detach().cpu().to(torch.float32).numpy().tobytes()
        row = UserStyleRow(
            namespace=namespace_of(new.owner),
            name=new.name,
            title=new.title,
            description=new.description,
            owner=new.owner,
            network=NetworkFamily.arbitrary if vector is not None else NetworkFamily.transformer,
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

    def get(self, name: str, scope: str | None = None) -> Style | None:
        """`scope`'s style called `name` (a `Client.scope`: a key's own namespace). With keys
        off (`scope` None) everything is visible: the shared namespace first, then the oldest
        style of that name made while keys were on."""
        query = select(UserStyleRow).where(UserStyleRow.name == name)
        if scope is not None:
            query = query.where(UserStyleRow.namespace == namespace_of(scope))
        else:
            shared_first = (UserStyleRow.namespace != SHARED_NAMESPACE).asc()
            query = query.order_by(shared_first, UserStyleRow.created_at)
        with Session(self.engine) as session:
            row = session.scalars(query.limit(1)).first()
            return None if row is None else to_style(row)

    def thumbnail(self, style: Style) -> bytes | None:
        with Session(self.engine) as session:
            return session.scalar(
                select(UserStyleRow.thumbnail).where(*_identifies(style.name, style.owner))
            )

    def remove(self, style: Style) -> bool:
        with Session(self.engine) as session:
            result = session.execute(
                delete(UserStyleRow).where(*_identifies(style.name, style.owner))
            )
            session.commit()
            return bool(result.rowcount)


def _identifies(name: str, owner: str | None) -> tuple[ColumnElement[bool], ...]:
    return UserStyleRow.namespace == namespace_of(owner), UserStyleRow.name == name
