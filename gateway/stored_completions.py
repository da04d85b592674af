"""Kept chats and what people said about them, as OpenAI's stored-completions API shapes them
(list, retrieve, messages, update, delete: what `client.chat.completions.list/retrieve/
messages.list/update/delete` call), plus feedback, conversations (sessions) and the admin's
export, purge and bounds.

A project sees only its own: another project's completion is the same 404 as a missing one.
Viewers read, members (and owners) write, owners delete. Rows are written by the audit writer
(gateway/capture.py); every read first writes what is queued, so a caller reads its own writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Integer, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from config.gateway import ProjectQuota
from gateway.audit import AuditWriter
from gateway.capture import as_json, scrubbed
from gateway.db import Base, Feedback, Project, Quota, StoredCompletion
from gateway.protocol import (
    FeedbackCreate,
    GatewayError,
    MetadataUpdate,
    checked_metadata,
    valid_name,
)
from gateway.tenancy import Principal

MAX_LIMIT = 100
FEEDBACK_PER_COMPLETION = 50  # what one kept chat holds: enough for a team, not a flood
SESSIONS_SHOWN = 50
EXPORT_ROWS = 20_000  # one export call; the control plane pages with `after`
PURGE_LISTED = 1000  # completions a purge names in its answer (it counts them all)


def not_found(completion_id: str, param: str | None = None) -> GatewayError:
    shown = completion_id[:96] if completion_id.isprintable() else "(invalid id)"
    return GatewayError(404, f"No stored completion '{shown}' in this project.",
                        "invalid_request_error", "completion_not_found", param)


def invalid(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_request", param)


def page_limit(raw: str | None) -> int:
    """A page's size as the query string gives it."""
    if raw is None:
        return 20
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:4]) <= MAX_LIMIT:
        raise invalid(f"limit is a whole number, 1 to {MAX_LIMIT}.", "limit")
    return int(raw)


def page_order(order: str | None) -> str:
    if order not in (None, "asc", "desc"):
        raise invalid("order is asc or desc.", "order")
    return order or "asc"


def like_pair(key: str, value: str) -> str:
    """A LIKE pattern matching exactly the pair `"key": "value"` inside kept metadata (written
    by gateway/capture.as_json: a quote inside a string is escaped, so the pattern cannot match
    across strings)."""
    inner = as_json({key: value})[1:-1]
    return "%" + inner.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def texts_of(row: StoredCompletion) -> Iterator[str]:
    """Every text a kept chat holds: the conversation, the answers, the metadata values."""
    yield from (m["content"] for m in json.loads(row.messages))
    yield from (c["message"]["content"] for c in json.loads(row.choices))
    yield from json.loads(row.metadata_json).values()


def clean_text(text: str | None) -> str | None:
    return None if text is None else text.replace("\x00", "\ufffd")


def reply_of(row: StoredCompletion) -> str:
    choices = json.loads(row.choices)
    return choices[0]["message"]["content"] if choices else ""


def as_object(row: StoredCompletion) -> dict[str, Any]:
    """The chat.completion object OpenAI's SDK reads, with the project's `metadata`."""
    return {"id": row.completion_id, "object": "chat.completion", "created": int(row.ts),
            "model": row.served or row.model, "choices": json.loads(row.choices),
            "usage": {"prompt_tokens": row.prompt_tokens,
                      "completion_tokens": row.completion_tokens,
                      "total_tokens": row.prompt_tokens + row.completion_tokens},
            "metadata": json.loads(row.metadata_json), "request_model": row.model,
            "user": row.user, "messages": json.loads(row.messages),
            "latency_ms": round(row.latency_ms, 1),
            "ttft_ms": None if row.ttft_ms is None else round(row.ttft_ms, 1)}


def feedback_object(fb: Feedback, completion_id: str, better_than: str | None) -> dict[str, Any]:
    return {"id": f"fb-{fb.id}", "object": "chat.completion.feedback",
            "completion_id": completion_id, "created": int(fb.ts), "user": fb.user,
            "rating": fb.rating, "score": fb.score, "comment": fb.comment,
            "correction": fb.correction, "better_than": better_than}


def page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    shown = rows[:limit]
    return {"object": "list", "data": shown, "first_id": shown[0]["id"] if shown else None,
            "last_id": shown[-1]["id"] if shown else None, "has_more": len(rows) > limit}


class StoredCompletions:
    def __init__(self, sessions: sessionmaker, audit: AuditWriter,
                 default_quota: ProjectQuota) -> None:
        self.sessions, self.audit, self.default_quota = sessions, audit, default_quota
        audit.after_write, audit.sweep = self.hold_bounds, self.sweep

    def written(self) -> None:
        """Write what the audit writer holds, so a read sees the caller's own chats."""
        self.audit.drain()

    # -- reading ------------------------------------------------------------------------------
    def _row(self, s: Session, project_id: int, completion_id: str,
             param: str | None = None, lock: bool = False) -> StoredCompletion:
        if not (0 < len(completion_id) <= 96 and completion_id.isprintable()):
            raise not_found(completion_id, param)  # never a query with what no id can be
        q = (select(StoredCompletion).where(StoredCompletion.project_id == project_id,
                                            StoredCompletion.completion_id == completion_id)
             .order_by(StoredCompletion.id.desc()).limit(1))
        row = s.scalar(q.with_for_update() if lock else q)
        if row is None:
            raise not_found(completion_id, param)
        return row

    def list(self, principal: Principal, model: str | None, metadata: dict[str, str],
             after: str | None, limit: str | None, order: str | None) -> dict[str, Any]:
        limit, order = page_limit(limit), page_order(order)
        try:
            checked_metadata(metadata)
        except ValueError as exc:
            raise invalid(str(exc), "metadata") from exc
        if model is not None and not valid_name(model):
            return page([], limit)  # no model has that name
        self.written()
        with self.sessions() as s:
            q = select(StoredCompletion).where(StoredCompletion.project_id ==
                                               principal.project_id)
            if model:
                q = q.where(or_(StoredCompletion.model == model,
                                StoredCompletion.served == model))
            if "session" in metadata:
                q = q.where(StoredCompletion.session == metadata["session"])
            for key, value in metadata.items():
                q = q.where(StoredCompletion.metadata_json.like(like_pair(key, value),
                                                                escape="\\"))
            if after:
                cursor = self._row(s, principal.project_id, after, "after").id
                q = q.where(StoredCompletion.id > cursor if order == "asc"
                            else StoredCompletion.id < cursor)
            q = q.order_by(StoredCompletion.id.asc() if order == "asc"
                           else StoredCompletion.id.desc())
            found = []
            for row in s.scalars(q.execution_options(yield_per=limit + 1)):
                kept = json.loads(row.metadata_json)  # the SQL filter, checked exactly
                if all(kept.get(k) == v for k, v in metadata.items()):
                    found.append(as_object(row))
                    if len(found) > limit:
                        break
            return page(found, limit)

    def retrieve(self, principal: Principal, completion_id: str) -> dict[str, Any]:
        self.written()
        with self.sessions() as s:
            row = self._row(s, principal.project_id, completion_id)
            return {**as_object(row), "feedback": self._feedback(s, row)}

    def messages(self, principal: Principal, completion_id: str, after: str | None,
                 limit: str | None, order: str | None) -> dict[str, Any]:
        self.written()
        limit, order = page_limit(limit), page_order(order)
        with self.sessions() as s:
            row = self._row(s, principal.project_id, completion_id)
            items = [{"id": f"{row.completion_id}-{i}", "role": m["role"],
                      "content": m["content"], "name": None, "content_parts": None}
                     for i, m in enumerate(json.loads(row.messages))]
        if order == "desc":
            items.reverse()
        if after:
            ids = [m["id"] for m in items]
            if after not in ids:
                raise invalid("after is the id of a message of this completion.", "after")
            items = items[ids.index(after) + 1:]
        return page(items, limit)

    # -- writing ------------------------------------------------------------------------------
    def update(self, principal: Principal, completion_id: str,
               given: MetadataUpdate) -> dict[str, Any]:
        self._require_writer(principal)
        metadata = given.metadata
        self.written()
        with self.sessions.begin() as s:
            row = self._row(s, principal.project_id, completion_id)
            row.metadata_json = as_json(metadata or {})
            row.session = (metadata or {}).get("session")
            return as_object(row)

    def delete(self, principal: Principal, completion_id: str) -> dict[str, Any]:
        if principal.role != "owner":
            raise GatewayError(403, "Deleting a stored completion needs the project's owner.",
                               "permission_error", "insufficient_role")
        self.written()
        with self.sessions.begin() as s:
            row = self._row(s, principal.project_id, completion_id)
            self._remove(s, [row.id])
        return {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}

    def feedback(self, principal: Principal, completion_id: str,
                 given: FeedbackCreate) -> dict[str, Any]:
        self._require_writer(principal)
        self.written()
        clean = scrubbed if principal.capture_scrub_pii else str
        with self.sessions.begin() as s:
            row = self._row(s, principal.project_id, completion_id, lock=True)
            given_already = s.scalar(select(func.count(Feedback.id)).where(
                Feedback.completion_row == row.id, Feedback.project_id == principal.project_id))
            if given_already >= FEEDBACK_PER_COMPLETION:
                raise GatewayError(400, f"This completion has {given_already} pieces of "
                                        "feedback, the most it keeps.", "invalid_request_error",
                                   "too_much_feedback")
            other = None
            if given.better_than is not None:
                other = self._row(s, principal.project_id, given.better_than, "better_than")
                if other.id == row.id or other.messages != row.messages:
                    raise GatewayError(400, "better_than names another answer to the same "
                                            "conversation.", "invalid_request_error",
                                       "not_same_prompt", "better_than")
            fb = Feedback(completion_row=row.id, project_id=principal.project_id,
                          key_id=principal.key_id, user=principal.user, ts=time.time(),
                          rating=given.rating, score=given.score,
                          comment=clean_text(given.comment and clean(given.comment)),
                          correction=clean_text(given.correction and clean(given.correction)),
                          better_than=other.id if other else None)
            s.add(fb)
            s.flush()
            return feedback_object(fb, row.completion_id,
                                   other.completion_id if other else None)

    def feedback_of(self, principal: Principal, completion_id: str) -> dict[str, Any]:
        self.written()
        with self.sessions() as s:
            row = self._row(s, principal.project_id, completion_id)
            return {"object": "list", "data": self._feedback(s, row)}

    def _feedback(self, s: Session, row: StoredCompletion) -> list[dict[str, Any]]:
        rows = s.scalars(select(Feedback).where(Feedback.completion_row == row.id,
                                                Feedback.project_id == row.project_id)
                         .order_by(Feedback.id)).all()
        others = self._completion_ids(s, {f.better_than for f in rows if f.better_than})
        return [feedback_object(f, row.completion_id, others.get(f.better_than or -1))
                for f in rows]

    @staticmethod
    def _completion_ids(s: Session, rows: Iterable[int]) -> dict[int, str]:
        wanted = list(rows)
        if not wanted:
            return {}
        return dict(s.execute(select(StoredCompletion.id, StoredCompletion.completion_id)
                              .where(StoredCompletion.id.in_(wanted))).all())

    @staticmethod
    def _require_writer(principal: Principal) -> None:
        if not principal.can_write:
            raise GatewayError(403, f"Role '{principal.role}' may read stored completions but "
                                    "not rate or change them.", "permission_error",
                               "insufficient_role")

    @staticmethod
    def _remove(s: Session, rows: list[int]) -> int:
        """Delete completions and every feedback that names them; returns feedback deleted."""
        gone = 0
        for start in range(0, len(rows), 500):
            part = rows[start:start + 500]
            gone += s.execute(delete(Feedback).where(Feedback.completion_row.in_(part))).rowcount
            gone += s.execute(delete(Feedback).where(Feedback.better_than.in_(part))).rowcount
            s.execute(delete(StoredCompletion).where(StoredCompletion.id.in_(part)))
        return gone

    # -- conversations ------------------------------------------------------------------------
    def sessions_of(self, principal: Principal) -> dict[str, Any]:
        """The caller's conversations and those shared with the project, newest first."""
        self.written()
        with self.sessions() as s:
            q = (select(StoredCompletion.session, StoredCompletion.user,
                        func.min(StoredCompletion.id), func.max(StoredCompletion.ts),
                        func.count(StoredCompletion.id),
                        func.max(StoredCompletion.shared.cast(Integer)))
                 .where(StoredCompletion.project_id == principal.project_id,
                        StoredCompletion.session.is_not(None))
                 .group_by(StoredCompletion.session, StoredCompletion.user)
                 .having(or_(StoredCompletion.user == principal.user,
                             func.max(StoredCompletion.shared.cast(Integer)) == 1))
                 .order_by(func.max(StoredCompletion.ts).desc()).limit(SESSIONS_SHOWN))
            found = s.execute(q).all()
            first = {row.id: row for row in s.scalars(select(StoredCompletion).where(
                StoredCompletion.id.in_([f[2] for f in found])))}
            return {"object": "list", "capture": principal.capture, "data": [
                {"id": session, "object": "chat.session", "user": user, "turns": turns,
                 "updated": int(updated), "shared": bool(shared),
                 "title": next((m["content"][:80] for m in json.loads(first[head].messages)
                                if m["role"] == "user"), "")}
                for session, user, head, updated, turns, shared in found]}

    def share(self, principal: Principal, session: str) -> dict[str, Any]:
        """Show the caller's conversation to the whole project."""
        self._require_writer(principal)
        if not (0 < len(session) <= 512 and session.isprintable()):
            raise GatewayError(404, "No conversation of yours by that name in this project.",
                               "invalid_request_error", "session_not_found", "session")
        self.written()
        with self.sessions.begin() as s:
            changed = s.execute(update(StoredCompletion).where(
                StoredCompletion.project_id == principal.project_id,
                StoredCompletion.session == session,
                StoredCompletion.user == principal.user).values(shared=True)).rowcount
        if not changed:
            raise GatewayError(404, "No conversation of yours by that name in this project.",
                               "invalid_request_error", "session_not_found", "session")
        return {"id": session, "object": "chat.session", "shared": True, "turns": changed}

    # -- the admin's: export, purge, bounds ---------------------------------------------------
    def export(self, project_id: int, model: str | None, since: float, after: int
               ) -> dict[str, Any]:
        """Every feedback given in the project (after feedback id `after`, on completions
        of `model` made since `since`) with the completion it is about: what a dataset from
        traffic reads (ingest/traffic.py)."""
        self._check_model(model)
        self.written()
        with self.sessions() as s:
            q = (select(Feedback, StoredCompletion)
                 .join(StoredCompletion, (StoredCompletion.id == Feedback.completion_row)
                       & (StoredCompletion.project_id == Feedback.project_id))
                 .where(Feedback.project_id == project_id, Feedback.id > after,
                        StoredCompletion.ts >= since).order_by(Feedback.id).limit(EXPORT_ROWS))
            if model:
                q = q.where(or_(StoredCompletion.model == model,
                                StoredCompletion.served == model))
            found = s.execute(q).all()
            others = {row.id: row for row in s.scalars(select(StoredCompletion).where(
                StoredCompletion.project_id == project_id,
                StoredCompletion.id.in_([f.better_than for f, _ in found if f.better_than])))}
            return {"object": "list", "has_more": len(found) == EXPORT_ROWS, "data": [
                {"feedback_id": f.id, "completion_id": c.completion_id, "model": c.model,
                 "served": c.served, "created": c.ts, "user": f.user,
                 "messages": json.loads(c.messages), "reply": reply_of(c),
                 "metadata": json.loads(c.metadata_json), "rating": f.rating,
                 "score": f.score, "comment": f.comment, "correction": f.correction,
                 "better_than": None if f.better_than not in others else {
                     "completion_id": others[f.better_than].completion_id,
                     "reply": reply_of(others[f.better_than])}}
                for f, c in found]}

    def feedback_count(self, project_id: int, model: str | None) -> dict[str, Any]:
        """How much feedback the project has (on `model`), and the newest's id: what the
        graph's feedback sensor polls."""
        self._check_model(model)
        self.written()
        with self.sessions() as s:
            q = (select(func.count(Feedback.id), func.max(Feedback.id))
                 .join(StoredCompletion, (StoredCompletion.id == Feedback.completion_row)
                       & (StoredCompletion.project_id == Feedback.project_id))
                 .where(Feedback.project_id == project_id))
            if model:
                q = q.where(or_(StoredCompletion.model == model,
                                StoredCompletion.served == model))
            count, newest = s.execute(q).one()
            return {"count": int(count or 0), "newest_id": int(newest or 0)}

    @staticmethod
    def _check_model(model: str | None) -> None:
        if model is not None and not valid_name(model):
            raise invalid("model is a model's or an adapter's name.", "model")

    def purge(self, contains: list[str], user: str | None, dry_run: bool) -> dict[str, Any]:
        """Erasure: kept chats holding any of `contains` (in the conversation, an answer, the
        metadata, or a comment or correction made on them) or made by `user`, in every project,
        with their feedback; and every feedback `user` gave. Matched in Python, exactly and
        case-sensitively, row by row: a rare admin act, never a LIKE that reads JSON keys."""
        self.written()
        with self.sessions.begin() as s:
            rows = sorted(set(self._matching(s, contains, user)))
            found: list[tuple[int, str, str]] = []
            for start in range(0, len(rows), 500):
                found += s.execute(select(StoredCompletion.id, StoredCompletion.completion_id,
                                          Project.name)
                                   .join(Project, Project.id == StoredCompletion.project_id)
                                   .where(StoredCompletion.id.in_(rows[start:start + 500]))
                                   ).all()
            feedback = 0
            if not dry_run:
                feedback = self._remove(s, rows)
                if user:
                    feedback += s.execute(delete(Feedback).where(Feedback.user == user)).rowcount
        return {"object": "completions.purge", "dry_run": dry_run, "completions": len(found),
                "feedback": feedback, "data": [{"project": project, "completion_id": cid}
                                               for _, cid, project in found[:PURGE_LISTED]]}

    @staticmethod
    def _matching(s: Session, contains: list[str], user: str | None) -> Iterator[int]:
        if contains:
            for row in s.scalars(select(StoredCompletion).execution_options(yield_per=500)):
                if any(phrase in text for text in texts_of(row) for phrase in contains):
                    yield row.id
            said = select(Feedback.completion_row, Feedback.comment, Feedback.correction)
            for completion, comment, correction in s.execute(
                    said.execution_options(yield_per=500)):
                if any(phrase in text for text in (comment, correction) if text
                       for phrase in contains):
                    yield completion
        if user:
            yield from s.scalars(select(StoredCompletion.id).where(
                StoredCompletion.user == user))

    # -- bounds -------------------------------------------------------------------------------
    def hold_bounds(self, batch: list[Base]) -> None:
        """After a write: each project that gained rows keeps at most its rows, bytes and days
        (the oldest go first, with their feedback), and a project whose policy was turned off
        since the chat was answered keeps none of the new ones."""
        written: dict[int, list[int]] = {}
        for row in batch:
            if isinstance(row, StoredCompletion):
                written.setdefault(row.project_id, []).append(row.id)
        for project_id, rows in written.items():
            with self.sessions.begin() as s:
                if s.scalar(select(Project.capture).where(Project.id == project_id)) == "off":
                    self._remove(s, [r for r in rows if r is not None])
                self._hold(s, project_id)

    def sweep(self) -> None:
        """Every project held to its bounds, those that wrote nothing lately too (days pass)."""
        with self.sessions() as s:
            projects = list(s.scalars(select(StoredCompletion.project_id).distinct()))
        for project_id in projects:
            with self.sessions.begin() as s:
                self._hold(s, project_id)

    def _hold(self, s: Session, project_id: int) -> None:
        quota = s.get(Quota, project_id)
        bounds = quota or self.default_quota
        doomed = self._over_bounds(s, project_id, bounds.capture_rows, bounds.capture_bytes,
                                   bounds.capture_days)
        if doomed:
            self._remove(s, doomed)
            s.execute(update(Project).where(Project.id == project_id).values(
                capture_evicted=Project.capture_evicted + len(doomed)))

    @staticmethod
    def _over_bounds(s: Session, project_id: int, rows: int, size: int, days: int
                     ) -> list[int]:
        """The rows to evict: every one older than `days`, then the oldest until the rest fit
        `rows` and `size`."""
        mine = StoredCompletion.project_id == project_id
        oldest_kept = time.time() - days * 86_400
        expired = list(s.scalars(select(StoredCompletion.id).where(
            mine, StoredCompletion.ts < oldest_kept)))
        count, total = s.execute(select(func.count(StoredCompletion.id),
                                        func.sum(StoredCompletion.size))
                                 .where(mine, StoredCompletion.ts >= oldest_kept)).one()
        total = int(total or 0)
        if count <= rows and total <= size:
            return expired
        doomed = list(expired)
        kept_rows = select(StoredCompletion.id, StoredCompletion.size).where(
            mine, StoredCompletion.ts >= oldest_kept).order_by(StoredCompletion.id)
        for row_id, row_size in s.execute(kept_rows.execution_options(yield_per=500)):
            if count <= rows and total <= size:
                break
            doomed.append(row_id)
            count, total = count - 1, total - row_size
        return doomed
