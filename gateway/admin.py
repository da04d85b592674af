"""The admin API: projects, quotas, members, keys, grants, usage. Every call leaves a row in
`gw_admin_audit` (who, what, on which project, result), refused and failed ones included.

Who may do what (one table, `RULES`):
- the platform admin (admin token, compared in constant time): everything;
- a project owner's key: members and keys of its own project, reading its quota and grants;
- any key of a project (viewers too): reading that project's usage, quota and grants.
The control plane reads usage and the traffic per model here (resources/gateway_admin.py), not
in the database: this API is the one contract between the two programs.
Grants and quotas are the platform admin's alone: a tenant never decides what it may reach or
how much it may spend. Failed authentication counts against the client address, as on /v1.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from gateway import protocol as p
from gateway.bodies import parse
from gateway.credentials import bearer_token
from gateway.db import AdminAuditRecord
from gateway.monitoring import recent_prompts, series
from gateway.routers import body_of, client_address, error_response, internal_error, is_admin
from gateway.serving import Gateway
from gateway.tenancy import NotFound, Principal, QuotaError, TenancyError

log = logging.getLogger("gateway.admin")

Who = Literal["admin", "owner", "member"]  # the least role an action needs ("member": any)
RULES: dict[str, Who] = {
    "project.create": "admin", "quota.set": "admin", "grant.create": "admin",
    "grant.revoke": "admin", "member.add": "owner", "key.create": "owner", "key.list": "owner",
    "key.rotate": "owner", "key.revoke": "owner", "quota.read": "member",
    "grant.list": "member", "usage.read": "member", "traffic.read": "admin",
    "capture.set": "owner", "capture.read": "member", "feedback.export": "admin",
    "feedback.count": "admin", "completions.purge": "admin", "monitor.read": "admin",
}
WINDOWS = (60, 300, 900, 3600, 21_600, 86_400)  # seconds a monitor window may last
MONITOR_SPAN = 31 * 86_400  # the longest time one monitor read covers
ADMIN_BODY_BYTES = 65_536


def clean(text: str | None, length: int) -> str | None:
    """A caller-chosen string as the audit table may keep it."""
    return None if text is None else text.replace("\x00", "\ufffd")[:length]


def parse_key_id(raw: str) -> int:
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > p.INT32:
        raise NotFound(f"no key with id {raw[:20]!r}")
    return int(raw)


def epoch(raw: str, param: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise TenancyError(f"{param} is a time in seconds since the epoch, e.g. 1764979200")
    return value


def whole(raw: str, param: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > p.INT32:
        raise TenancyError(f"{param} is a whole number")
    return int(raw)


def make_admin_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])
    tenancy, admission = gateway.tenancy, gateway.admission
    limits = gateway.settings.limits

    def identify(request: Request, record: AdminAuditRecord) -> Principal | None:
        """None for the platform admin, else the caller's key (401 without a valid one)."""
        address = client_address(request)
        admission.check_address(address)
        if is_admin(request, gateway):
            record.actor = "admin"
            return None
        token = bearer_token(request.headers.get("authorization"))
        principal = tenancy.authenticate(token) if token else None
        if principal is None:
            admission.failed_authentication(address)
            raise p.GatewayError(401, "Admin token or a project key required.",
                                 "authentication_error", "not_admin")
        record.actor = f"key:{principal.key_id}"
        admission.count_request(principal)
        return principal

    def allow(principal: Principal, action: str, project: str | None) -> None:
        needed = RULES[action]
        if needed == "admin" or project != principal.project or (
                needed == "owner" and principal.role != "owner"):
            whom = "the admin token" if needed == "admin" else f"this project's {needed}"
            raise p.GatewayError(403, f"'{action}' needs {whom}.", "permission_error",
                                 "not_allowed")

    async def run(request: Request, action: str, project: str | None,
                  do: Callable[[Any], Any], model: type[BaseModel] | None = None,
                  target: str | None = None, key_id: str | None = None,
                  offload: bool = False) -> Response:
        """`offload`: `do` reads or changes many rows (kept chats), so it runs in a worker
        thread, off the event loop every request shares."""
        record = AdminAuditRecord(ts=time.time(), actor="unauthenticated",
                                  client=clean(client_address(request), 64), action=action,
                                  project=clean(project, 64), target=clean(target, 160),
                                  status=200)
        try:
            principal = identify(request, record)
            if key_id is not None:  # the key's project decides who may touch it
                project = tenancy.project_of_key(parse_key_id(key_id))
                if project is None or (principal and project != principal.project):
                    raise NotFound(f"no key with id {key_id}")  # same answer: no leak
                record.project = project
            if project is not None and not p.PROJECT_NAME.fullmatch(project):
                raise NotFound(f"no project named {project[:64]!r}")
            if principal is not None:
                allow(principal, action, project)
            body = await parse(request, model, limits, ADMIN_BODY_BYTES) if model else None
            return JSONResponse(await asyncio.to_thread(do, body) if offload else do(body))
        except p.GatewayError as error:
            record.status, record.error = error.status, error.code
            return error_response(error)
        except TenancyError as error:
            status = 403 if isinstance(error, QuotaError) else (
                404 if isinstance(error, NotFound) else 400)
            record.status, record.error = status, "quota_exceeded" if status == 403 else (
                "not_found" if status == 404 else "invalid_request")
            return error_response(p.GatewayError(status, str(error), "invalid_request_error",
                                                 record.error))
        except Exception:
            log.exception("admin %s failed", action)
            error = internal_error()
            record.status, record.error = error.status, error.code
            return error_response(error)
        finally:
            gateway.audit.add(record)

    @router.post("/projects", openapi_extra=body_of(p.ProjectCreate))
    async def create_project(request: Request) -> Response:
        def do(b: p.ProjectCreate) -> Any:
            quota = None if b.quota is None else tenancy.default_quota.model_copy(
                update=b.quota.model_dump(exclude_none=True))
            return tenancy.create_project(b.name, b.owner, b.log_prompts, quota)
        return await run(request, "project.create", None, do, p.ProjectCreate)

    @router.get("/projects/{project}/quota")
    async def get_quota(project: str, request: Request) -> Response:
        return await run(request, "quota.read", project, lambda _: tenancy.quota(project))

    @router.put("/projects/{project}/quota", openapi_extra=body_of(p.QuotaUpdate))
    async def set_quota(project: str, request: Request) -> Response:
        return await run(request, "quota.set", project, lambda b: tenancy.set_quota(
            project, **b.model_dump()), p.QuotaUpdate)

    @router.post("/projects/{project}/members", openapi_extra=body_of(p.MemberAdd))
    async def add_member(project: str, request: Request) -> Response:
        return await run(request, "member.add", project,
                         lambda b: tenancy.add_member(project, b.user, b.role), p.MemberAdd)

    @router.post("/projects/{project}/keys", openapi_extra=body_of(p.KeyCreate))
    async def create_key(project: str, request: Request) -> Response:
        return await run(request, "key.create", project, lambda b: tenancy.create_key(
            project, b.user, b.name, b.rpm, b.tpm), p.KeyCreate)

    @router.get("/projects/{project}/keys")
    async def list_keys(project: str, request: Request) -> Response:
        return await run(request, "key.list", project, lambda _: tenancy.list_keys(project))

    @router.get("/projects/{project}/grants")
    async def list_grants(project: str, request: Request) -> Response:
        return await run(request, "grant.list", project, lambda _: tenancy.grants(project))

    @router.post("/projects/{project}/grants", openapi_extra=body_of(p.GrantCreate))
    async def grant(project: str, request: Request) -> Response:
        return await run(request, "grant.create", project,
                         lambda b: tenancy.grant(project, b.name, b.kind), p.GrantCreate)

    @router.delete("/projects/{project}/grants/{kind}/{name}")
    async def revoke_grant(project: str, kind: str, name: str, request: Request) -> Response:
        def do(_: None) -> Any:
            if kind not in ("model", "collection") or not p.valid_name(name):
                raise NotFound(f"no {kind[:16]} grant {name[:128]!r} in {project!r}")
            return tenancy.revoke_grant(project, name, kind)
        return await run(request, "grant.revoke", project, do, target=f"{kind}/{name}")

    @router.post("/keys/{key_id}/rotate")
    async def rotate(key_id: str, request: Request) -> Response:
        return await run(request, "key.rotate", None,
                         lambda _: tenancy.rotate_key(parse_key_id(key_id)),
                         target=key_id, key_id=key_id)

    @router.delete("/keys/{key_id}")
    async def revoke(key_id: str, request: Request) -> Response:
        return await run(request, "key.revoke", None,
                         lambda _: tenancy.revoke_key(parse_key_id(key_id)),
                         target=key_id, key_id=key_id)

    @router.get("/projects/{project}/capture")
    async def get_capture(project: str, request: Request) -> Response:
        return await run(request, "capture.read", project, lambda _: tenancy.capture(project),
                         offload=True)

    @router.put("/projects/{project}/capture", openapi_extra=body_of(p.CapturePolicy))
    async def set_capture(project: str, request: Request) -> Response:
        """What the project's endpoint keeps: off, request (`store: true`) or all."""
        return await run(request, "capture.set", project, lambda b: tenancy.set_capture(
            project, b.policy, b.scrub_pii), p.CapturePolicy)

    @router.get("/projects/{project}/feedback")
    async def export_feedback(project: str, request: Request, model: str | None = None,
                              since: str = "0", after: str = "0") -> Response:
        """Feedback with the completions it is about, oldest first, after feedback id
        `after`: what a dataset from traffic reads."""
        def do(_: None) -> Any:
            return gateway.stored.export(tenancy.project_id(project), model,
                                         epoch(since, "since"), whole(after, "after"))
        return await run(request, "feedback.export", project, do, offload=True)

    @router.get("/projects/{project}/feedback/count")
    async def count_feedback(project: str, request: Request, model: str | None = None
                             ) -> Response:
        return await run(request, "feedback.count", project, lambda _: gateway.stored
                         .feedback_count(tenancy.project_id(project), model), offload=True)

    @router.post("/completions/purge", openapi_extra=body_of(p.CompletionsPurge))
    async def purge_completions(request: Request) -> Response:
        """Erasure: stored completions holding any of `contains`, or made by `user`, and
        their feedback, in every project."""
        return await run(request, "completions.purge", None, lambda b: gateway.stored.purge(
            b.contains, b.user, b.dry_run), p.CompletionsPurge, offload=True)

    @router.get("/monitor")
    async def monitor(request: Request, since: str = "0", until: str | None = None,
                      window: str = "3600") -> Response:
        """Per model and window: requests, errors, latency, TTFT, TPOT, tokens, refusals,
        feedback rate and mean score (repeat `model=` to choose models)."""
        def do(_: None) -> Any:
            start = epoch(since, "since")
            end = epoch(until, "until") if until is not None else time.time()
            step = whole(window, "window")
            if step not in WINDOWS:
                raise TenancyError(f"window is one of {', '.join(map(str, WINDOWS))} seconds")
            if not 0 < end - start <= MONITOR_SPAN:
                raise TenancyError("until comes after since, at most 31 days later")
            models = request.query_params.getlist("model") or None
            if models and not all(p.valid_name(m) for m in models):
                raise TenancyError("model is a model's or an adapter's name")
            gateway.stored.written()  # what is queued is part of the window
            return series(gateway.sessions, start, end, step, models)
        return await run(request, "monitor.read", None, do, offload=True)

    @router.get("/monitor/prompts")
    async def monitor_prompts(request: Request, since: str = "0", limit: str = "500"
                              ) -> Response:
        """The last user turn of the newest kept chats of the `model`s: what drift is
        measured on (only chats a project chose to keep)."""
        def do(_: None) -> Any:
            models = request.query_params.getlist("model")
            if not models or not all(p.valid_name(m) for m in models):
                raise TenancyError("name the models: model=<name>, repeatable")
            count = whole(limit, "limit")
            if not 1 <= count <= 5000:
                raise TenancyError("limit is 1 to 5000")
            gateway.stored.written()
            return {"object": "list", "data": recent_prompts(
                gateway.sessions, models, epoch(since, "since"), count)}
        return await run(request, "monitor.read", None, do, offload=True)

    @router.get("/usage")
    async def usage(request: Request, project: str | None = None, day: str | None = None
                    ) -> Response:
        def do(_: None) -> Any:
            if day is not None and not p.valid_day(day):
                raise TenancyError("day must be a calendar day written YYYY-MM-DD")
            return tenancy.usage(project, day)
        return await run(request, "usage.read", project, do)

    @router.get("/traffic")
    async def traffic(request: Request, since: str = "0") -> Response:
        """Answered requests and generated tokens per model since `since` (epoch seconds):
        what a deployment's hot-adapter policy weighs."""
        def do(_: None) -> Any:
            start = epoch(since, "since")
            return {"since": start, "models": tenancy.traffic_by_model(start)}
        return await run(request, "traffic.read", None, do)

    return router
