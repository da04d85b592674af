"""The gateway's own database: projects, members, API keys, grants and the audit log.

SQLite by default (one file beside the project), PostgreSQL in production; the same SQLAlchemy
models serve both, and the tests run against both. The schema itself is made and changed by the
migrations in gateway/migrations/ (docs/operations.md "The gateway's database"): a model change
needs a revision there, which tests/gateway/test_migrations.py enforces.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from gateway.migrate import upgrade_at_start

Role = Literal["owner", "member", "viewer"]
ROLES: tuple[Role, ...] = ("owner", "member", "viewer")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "gw_projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    log_prompts: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # what the endpoint keeps of its chats (gateway/capture.py): off | request | all
    capture: Mapped[str] = mapped_column(String(8), default="off", server_default="off")
    capture_scrub_pii: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default="0")
    capture_evicted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Member(Base):
    __tablename__ = "gw_members"
    __table_args__ = (UniqueConstraint("project_id", "user"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("gw_projects.id"))
    user: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))


class ApiKey(Base):
    __tablename__ = "gw_api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("gw_projects.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("gw_members.id"))
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    rpm: Mapped[int] = mapped_column(Integer)
    tpm: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Quota(Base):
    """Ceilings the platform admin sets for a project; a project without a row gets the
    settings' `project_quota`. Every key's limits are clamped to these, and the project's
    requests and tokens are counted across all its keys."""

    __tablename__ = "gw_quotas"
    project_id: Mapped[int] = mapped_column(ForeignKey("gw_projects.id"), primary_key=True)
    rpm: Mapped[int] = mapped_column(Integer)
    tpm: Mapped[int] = mapped_column(Integer)
    max_keys: Mapped[int] = mapped_column(Integer)
    max_in_flight: Mapped[int] = mapped_column(Integer)
    audio_seconds_per_day: Mapped[int] = mapped_column(Integer, default=36_000,
                                                       server_default="36000")
    capture_rows: Mapped[int] = mapped_column(Integer, default=100_000, server_default="100000")
    capture_bytes: Mapped[int] = mapped_column(Integer, default=200_000_000,
                                               server_default="200000000")
    capture_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")


class Grant(Base):
    """A model (base model, adapter or mixture) or a RAG collection a project may use."""

    __tablename__ = "gw_grants"
    __table_args__ = (UniqueConstraint("project_id", "kind", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("gw_projects.id"))
    kind: Mapped[str] = mapped_column(String(16))  # model | collection
    name: Mapped[str] = mapped_column(String(128))


class AuditRecord(Base):
    __tablename__ = "gw_audit"
    __table_args__ = (Index("ix_gw_audit_project_day", "project_id", "day"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    day: Mapped[str] = mapped_column(String(10))
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    route: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    replica: Mapped[str | None] = mapped_column(String(256), nullable=True)
    prompt_text: Mapped[str | None] = mapped_column(Text, nullable=True)


class StoredCompletion(Base):
    """A chat the project kept (OpenAI's stored completions): what was asked, what was answered
    by which model and replica, and how fast. `completion_id` is the engine's id, the one the
    client saw; the row id orders them."""

    __tablename__ = "gw_completions"
    __table_args__ = (Index("ix_gw_completions_project_cid", "project_id", "completion_id"),
                      Index("ix_gw_completions_project_session", "project_id", "session"),
                      {"sqlite_autoincrement": True})  # an id is never reused after a delete
    id: Mapped[int] = mapped_column(primary_key=True)
    completion_id: Mapped[str] = mapped_column(String(96))
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    key_id: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(128))
    ts: Mapped[float] = mapped_column(Float, index=True)
    model: Mapped[str] = mapped_column(String(128))  # as requested (the served name)
    served: Mapped[str | None] = mapped_column(String(256), nullable=True)  # engine's answer
    replica: Mapped[str | None] = mapped_column(String(256), nullable=True)
    messages: Mapped[str] = mapped_column(Text)  # JSON list of {role, content}
    choices: Mapped[str] = mapped_column(Text)  # JSON list of {index, message, finish_reason}
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    session: Mapped[str | None] = mapped_column(String(512), nullable=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(Integer, default=0)  # bytes kept, for the bound


class Feedback(Base):
    """What a person said about a stored completion: a thumb, a score, a comment, the reply it
    should have been, or that it is better than another answer to the same prompt."""

    __tablename__ = "gw_feedback"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(primary_key=True)
    completion_row: Mapped[int] = mapped_column(Integer, index=True)  # gw_completions.id
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    key_id: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(128))
    ts: Mapped[float] = mapped_column(Float, index=True)
    rating: Mapped[str | None] = mapped_column(String(8), nullable=True)  # up | down
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    better_than: Mapped[int | None] = mapped_column(Integer, nullable=True,
                                                    index=True)  # a completion row


class AdminAuditRecord(Base):
    """One row per admin API call, refused ones included: who, what, on which project, result."""

    __tablename__ = "gw_admin_audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(160))  # "admin", "key:<id>", "unauthenticated"
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))  # e.g. "key.create", "grant.revoke"
    project: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target: Mapped[str | None] = mapped_column(String(160), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(64), nullable=True)


def connect(url: str) -> Engine:
    """The engine alone, the schema untouched (what `factory-gateway db` works on); a SQLite
    file's folder is created."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"check_same_thread": False}} if url.startswith("sqlite") else {
        "pool_pre_ping": True}
    return create_engine(url, **kwargs)


def make_engine(url: str) -> Engine:
    """The engine, the database upgraded to the migrations' head first (gateway/migrate.py):
    tables and columns come from gateway/migrations/ only, never from the models."""
    engine = connect(url)
    upgrade_at_start(engine)
    return engine


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
