"""Projects, members, keys and grants: who may call what. Used by the admin API and the CLI.

Keys are random 256-bit secrets shown once; only their SHA-256 is stored (a high-entropy secret
needs no slow hash), with a short prefix kept in clear so people can tell keys apart.

Key and grant lookups are on every request's path, so they are cached for `cache_seconds`; a change
made through this process clears the cache at once, one made by another process (the CLI, another
gateway replica) takes effect within `cache_seconds`.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cachetools import TTLCache
from pydantic import ValidationError
from sqlalchemy import func, not_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from config.gateway import ProjectQuota
from gateway.db import (
    ROLES,
    ApiKey,
    AuditRecord,
    Grant,
    Member,
    Project,
    Quota,
    StoredCompletion,
)

KEY_PREFIX = "af-"


class TenancyError(ValueError):
    """A request the admin API answers with 400/404: phrased for the person who made it."""


class NotFound(TenancyError):
    """No such project, key or grant for this caller (answered 404, the same whether it does
    not exist or is another project's)."""


class QuotaError(TenancyError):
    """A ceiling the platform admin set would be exceeded (answered 403)."""


@dataclass(frozen=True)
class Principal:
    """A key's identity and the limits that bind it: its own, clamped to its project's, and the
    project's totals shared by all its keys."""

    key_id: int
    project_id: int
    project: str
    user: str
    role: str
    rpm: int
    tpm: int
    log_prompts: bool
    quota: ProjectQuota
    capture: str = "off"  # what the endpoint keeps of its chats: off | request | all
    capture_scrub_pii: bool = False

    @property
    def can_infer(self) -> bool:
        return self.role in ("owner", "member")

    @property
    def can_write(self) -> bool:
        """Rate, correct, relabel kept chats: what members do; viewers read."""
        return self.role in ("owner", "member")

    @property
    def key_scope(self) -> str:
        return f"k:{self.key_id}"

    @property
    def project_scope(self) -> str:
        return f"p:{self.project_id}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


F = TypeVar("F", bound=Callable[..., Any])


def invalidates(method: F) -> F:
    """Clear the lookup caches once the change is committed (not before: a request in between
    would cache the old answer again)."""
    @functools.wraps(method)
    def wrapper(self: Tenancy, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._changed()
    return wrapper  # type: ignore[return-value]


class Tenancy:
    def __init__(self, sessions: sessionmaker, default_rpm: int, default_tpm: int,
                 cache_seconds: float = 5.0, default_quota: ProjectQuota | None = None) -> None:
        self.sessions, self.default_rpm, self.default_tpm = sessions, default_rpm, default_tpm
        self.default_quota = default_quota or ProjectQuota()
        size, ttl = (10_000, cache_seconds) if cache_seconds > 0 else (0, 1)
        self._principals: TTLCache[str, Principal | None] = TTLCache(size, ttl)
        self._grants: TTLCache[tuple[int, str], frozenset[str]] = TTLCache(size, ttl)

    def _changed(self) -> None:
        self._principals.clear()
        self._grants.clear()

    # -- projects and members -------------------------------------------------------------------
    def _project(self, s: Session, name: str) -> Project:
        project = s.scalar(select(Project).where(Project.name == name))
        if project is None:
            raise NotFound(f"no project named {name!r}")
        return project

    def project_id(self, name: str) -> int:
        with self.sessions() as s:
            return self._project(s, name).id

    def has_project(self, name: str) -> bool:
        with self.sessions() as s:
            return s.scalar(select(Project.id).where(Project.name == name)) is not None

    def create_project(self, name: str, owner: str, log_prompts: bool = False,
                       quota: ProjectQuota | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            if s.scalar(select(Project).where(Project.name == name)):
                raise TenancyError(f"project {name!r} already exists")
            project = Project(name=name, log_prompts=log_prompts)
            s.add(project)
            s.flush()
            s.add(Member(project_id=project.id, user=owner, role="owner"))
            if quota is not None:
                s.add(Quota(project_id=project.id, **quota.model_dump()))
            return {"project": name, "owner": owner, "log_prompts": log_prompts,
                    "quota": (quota or self.default_quota).model_dump()}

    # -- quotas ---------------------------------------------------------------------------------
    def _quota(self, s: Session, project_id: int) -> ProjectQuota:
        row = s.get(Quota, project_id)
        if row is None:
            return self.default_quota
        return ProjectQuota.model_validate({f: getattr(row, f) for f in ProjectQuota.model_fields})

    def quota(self, project: str) -> dict[str, Any]:
        with self.sessions() as s:
            return {"project": project, **self._quota(s, self._project(s, project).id)
                    .model_dump()}

    @invalidates
    def set_quota(self, project: str, **changes: int | None) -> dict[str, Any]:
        """Change some ceilings, keep the others. Keys above a lowered ceiling are clamped when
        they are used; their stored limits are left as set."""
        with self.sessions.begin() as s:
            p = self._project(s, project)
            try:
                quota = ProjectQuota.model_validate(
                    self._quota(s, p.id).model_dump()
                    | {k: v for k, v in changes.items() if v is not None})
            except ValidationError as exc:
                raise TenancyError(f"invalid quota: {exc.errors()[0]['loc'][0]}: "
                                   f"{exc.errors()[0]['msg']}") from exc
            row = s.get(Quota, p.id)
            if row is None:
                s.add(Quota(project_id=p.id, **quota.model_dump()))
            else:
                for field, value in quota.model_dump().items():
                    setattr(row, field, value)
            return {"project": project, **quota.model_dump()}

    # -- capture --------------------------------------------------------------------------------
    @invalidates
    def set_capture(self, project: str, policy: str, scrub_pii: bool) -> dict[str, Any]:
        """The project's capture policy; keys see it within `cache_seconds`."""
        with self.sessions.begin() as s:
            p = self._project(s, project)
            p.capture, p.capture_scrub_pii = policy, scrub_pii
        return self.capture(project)

    def capture(self, project: str) -> dict[str, Any]:
        """The policy, the bounds, and what is kept and was evicted to hold them."""
        with self.sessions() as s:
            p = self._project(s, project)
            quota = self._quota(s, p.id)
            rows, size = s.execute(select(func.count(StoredCompletion.id),
                                          func.sum(StoredCompletion.size))
                                   .where(StoredCompletion.project_id == p.id)).one()
            return {"project": project, "policy": p.capture, "scrub_pii": p.capture_scrub_pii,
                    "kept": {"rows": rows, "bytes": int(size or 0)},
                    "evicted": p.capture_evicted,
                    "bounds": {"rows": quota.capture_rows, "bytes": quota.capture_bytes,
                               "days": quota.capture_days}}

    @invalidates
    def add_member(self, project: str, user: str, role: str) -> dict[str, Any]:
        if role not in ROLES:
            raise TenancyError(f"role must be one of {', '.join(ROLES)}")
        with self.sessions.begin() as s:
            p = self._project(s, project)
            member = s.scalar(select(Member).where(Member.project_id == p.id,
                                                   Member.user == user))
            if member:
                member.role = role
            else:
                s.add(Member(project_id=p.id, user=user, role=role))
            return {"project": project, "user": user, "role": role}

    # -- keys -----------------------------------------------------------------------------------
    def create_key(self, project: str, user: str, name: str = "default",
                   rpm: int | None = None, tpm: int | None = None) -> dict[str, Any]:
        """Returns the secret once; it cannot be recovered later. Limits above the project's
        ceilings are clamped to them, and the project's key count is a ceiling too."""
        with self.sessions.begin() as s:
            p = self._project(s, project)
            member = s.scalar(select(Member).where(Member.project_id == p.id,
                                                   Member.user == user))
            if member is None:
                raise TenancyError(f"{user!r} is not a member of {project!r}; add them first")
            return self._new_key(s, p, member, name, rpm, tpm)

    def _new_key(self, s: Session, p: Project, member: Member, name: str, rpm: int | None,
                 tpm: int | None) -> dict[str, Any]:
        quota = self._quota(s, p.id)
        active = s.scalar(select(func.count(ApiKey.id)).where(
            ApiKey.project_id == p.id, ApiKey.revoked_at.is_(None))) or 0
        if active >= quota.max_keys:
            raise QuotaError(f"project {p.name!r} has {active} active keys, its limit; revoke "
                             "one or ask the platform admin to raise max_keys")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(project_id=p.id, member_id=member.id, name=name, prefix=secret[:10],
                     secret_hash=hash_secret(secret),
                     rpm=min(rpm or self.default_rpm, quota.rpm),
                     tpm=min(tpm or self.default_tpm, quota.tpm))
        s.add(key)
        s.flush()
        return {"id": key.id, "key": secret, "prefix": key.prefix, "project": p.name,
                "user": member.user, "role": member.role, "rpm": key.rpm, "tpm": key.tpm}

    @invalidates
    def revoke_key(self, key_id: int) -> dict[str, Any]:
        with self.sessions.begin() as s:
            key = s.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"no key with id {key_id}")
            key.revoked_at = key.revoked_at or time.time()
            return {"id": key_id, "revoked": True}

    @invalidates
    def rotate_key(self, key_id: int) -> dict[str, Any]:
        """A new secret with the same project, member and limits; the old one stops working
        in the same transaction (so rotation works at the key ceiling, too)."""
        with self.sessions.begin() as s:
            key = s.get(ApiKey, key_id)
            if key is None or key.revoked_at:
                raise NotFound(f"no active key with id {key_id}")
            key.revoked_at = time.time()
            s.flush()
            member = s.get(Member, key.member_id)
            project = s.get(Project, key.project_id)
            assert member and project
            return self._new_key(s, project, member, key.name, key.rpm, key.tpm)

    def project_of_key(self, key_id: int) -> str | None:
        with self.sessions() as s:
            return s.scalar(select(Project.name).join(ApiKey, ApiKey.project_id == Project.id)
                            .where(ApiKey.id == key_id))

    def list_keys(self, project: str) -> list[dict[str, Any]]:
        with self.sessions() as s:
            p = self._project(s, project)
            rows = s.execute(select(ApiKey, Member).join(Member, ApiKey.member_id == Member.id)
                             .where(ApiKey.project_id == p.id).order_by(ApiKey.id)).all()
            return [{"id": k.id, "name": k.name, "prefix": k.prefix, "user": m.user,
                     "role": m.role, "rpm": k.rpm, "tpm": k.tpm,
                     "revoked": k.revoked_at is not None} for k, m in rows]

    def authenticate(self, secret: str) -> Principal | None:
        digest = hash_secret(secret)
        if digest in self._principals:
            return self._principals[digest]
        principal = self._lookup(digest)
        self._principals[digest] = principal
        return principal

    def _lookup(self, digest: str) -> Principal | None:
        with self.sessions() as s:
            row = s.execute(
                select(ApiKey, Member, Project)
                .join(Member, ApiKey.member_id == Member.id)
                .join(Project, ApiKey.project_id == Project.id)
                .where(ApiKey.secret_hash == digest)
            ).first()
            if row is None:
                return None
            key, member, project = row
            if key.revoked_at is not None:
                return None
            quota = self._quota(s, project.id)
        return Principal(key.id, project.id, project.name, member.user, member.role,
                         min(key.rpm, quota.rpm), min(key.tpm, quota.tpm), project.log_prompts,
                         quota, project.capture, project.capture_scrub_pii)

    # -- grants ---------------------------------------------------------------------------------
    @invalidates
    def grant(self, project: str, name: str, kind: str = "model") -> dict[str, Any]:
        if kind not in ("model", "collection"):
            raise TenancyError("kind must be model or collection")
        with self.sessions.begin() as s:
            p = self._project(s, project)
            if not s.scalar(select(Grant).where(Grant.project_id == p.id, Grant.kind == kind,
                                                Grant.name == name)):
                s.add(Grant(project_id=p.id, kind=kind, name=name))
            return {"project": project, "kind": kind, "name": name}

    @invalidates
    def revoke_grant(self, project: str, name: str, kind: str = "model") -> dict[str, Any]:
        with self.sessions.begin() as s:
            p = self._project(s, project)
            grant = s.scalar(select(Grant).where(Grant.project_id == p.id, Grant.kind == kind,
                                                 Grant.name == name))
            if grant is None:
                raise NotFound(f"no {kind} grant {name!r} in project {project!r}")
            s.delete(grant)
            return {"project": project, "kind": kind, "name": name, "revoked": True}

    def grants(self, project: str) -> list[dict[str, str]]:
        with self.sessions() as s:
            p = self._project(s, project)
            return [{"kind": k, "name": n} for k, n in s.execute(
                select(Grant.kind, Grant.name).where(Grant.project_id == p.id)
                .order_by(Grant.kind, Grant.name))]

    def grantees(self, name: str, kind: str = "model") -> int:
        """How many projects were granted `name` (a collection shared by several is theirs
        together)."""
        with self.sessions() as s:
            return s.scalar(select(func.count(Grant.id)).where(Grant.name == name,
                                                               Grant.kind == kind)) or 0

    def granted(self, project_id: int, kind: str = "model") -> frozenset[str]:
        if (project_id, kind) not in self._grants:
            with self.sessions() as s:
                self._grants[project_id, kind] = frozenset(s.scalars(select(Grant.name).where(
                    Grant.project_id == project_id, Grant.kind == kind)))
        return self._grants[project_id, kind]

    # -- usage ----------------------------------------------------------------------------------
    def traffic_by_model(self, since: float) -> dict[str, dict[str, int]]:
        """Answered requests and generated tokens per model since `since` (epoch seconds), from
        the audit log: what a deployment's hot-adapter policy weighs."""
        with self.sessions() as s:
            q = (select(AuditRecord.model, func.count(AuditRecord.id),
                        func.sum(AuditRecord.completion_tokens))
                 .where(AuditRecord.ts >= since, AuditRecord.status == 200,
                        AuditRecord.model.is_not(None),
                        # the Studio's rows name what they acted on, not a model that answered
                        or_(AuditRecord.route.is_(None),
                            not_(AuditRecord.route.startswith("studio."))))
                 .group_by(AuditRecord.model))
            return {model: {"requests": n, "completion_tokens": int(tokens or 0)}
                    for model, n, tokens in s.execute(q)}

    def audio_seconds(self, project_id: int, day: str) -> float:
        """Seconds of audio the project was charged for on `day` (the speech quota's count)."""
        with self.sessions() as s:
            total = s.scalar(select(func.sum(AuditRecord.audio_seconds)).where(
                AuditRecord.project_id == project_id, AuditRecord.day == day))
            return float(total or 0.0)

    def usage(self, project: str | None = None, day: str | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and audio seconds per day, project and key, from the audit log."""
        with self.sessions() as s:
            q = (select(AuditRecord.day, Project.name, AuditRecord.key_id,
                        func.count(AuditRecord.id), func.sum(AuditRecord.prompt_tokens),
                        func.sum(AuditRecord.completion_tokens),
                        func.sum(AuditRecord.audio_seconds))
                 .join(Project, Project.id == AuditRecord.project_id)
                 .group_by(AuditRecord.day, Project.name, AuditRecord.key_id)
                 .order_by(AuditRecord.day, Project.name, AuditRecord.key_id))
            if project:
                q = q.where(Project.name == project)
            if day:
                q = q.where(AuditRecord.day == day)
            out: dict[tuple, dict[str, Any]] = defaultdict(dict)
            for d, p, key_id, n, pt, ct, audio in s.execute(q):
                out[(d, p, key_id)] = {"day": d, "project": p, "key_id": key_id, "requests": n,
                                       "prompt_tokens": int(pt or 0),
                                       "completion_tokens": int(ct or 0),
                                       "audio_seconds": round(float(audio or 0.0), 3)}
            return list(out.values())
