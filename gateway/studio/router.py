"""The Studio's HTTP API under /studio/api: the same key, admission, error format and audit row
as /v1 (gateway/routers.handled), and a 404 for anything of another project. Object-store reads
run in worker threads, off the event loop every other request shares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from config.studio import TrainingRequest
from gateway.accounting import Outcome
from gateway.bodies import parse
from gateway.monitoring import series
from gateway.protocol import GatewayError
from gateway.routers import body_of, handled, query_int
from gateway.serving import Gateway
from gateway.studio.dagster import DagsterUnavailable
from gateway.studio.service import Studio
from gateway.tenancy import Principal

STUDIO_BODY_BYTES = 65_536
MONITOR_WINDOWS = (60, 300, 900, 3600, 21_600)
# a file upload: the body is the file itself, streamed (its name and kind are query parameters)
RAW_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


class ColumnMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mapping: dict[str, str] = Field(max_length=8)


class FeedbackData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sft", "preference", "feedback"] = "sft"
    model: str | None = Field(None, max_length=128, description="only chats of this model")


def make_studio_router(gateway: Gateway, studio: Studio) -> APIRouter:
    router = APIRouter(prefix="/studio/api", tags=["studio"])
    limits = gateway.settings.limits

    async def handle(route: str, request: Request, target: str | None,
                     work: Callable[[Principal], Awaitable[Any]], status: int = 200
                     ) -> Response:
        async def run(principal: Principal, outcome: Outcome) -> Response:
            outcome.model = target  # the audit row names what was acted on
            studio.require_enabled()
            try:
                response = JSONResponse(await work(principal), status_code=status)
                outcome.status = status
                return response
            except DagsterUnavailable as exc:
                raise GatewayError(503, f"The Studio could not reach Dagster: {exc}",
                                   "server_error", "dagster_unavailable") from exc
        return await handled(gateway, f"studio.{route}", request, run)

    async def parsed(request: Request, model: type[BaseModel]) -> Any:
        return await parse(request, model, limits, STUDIO_BODY_BYTES)

    @router.get("/options")
    async def options(request: Request) -> Response:
        async def work(_: Principal) -> Any:
            return await asyncio.to_thread(studio.options)
        return await handle("options", request, None, work)

    @router.get("/estimate")
    async def estimate(request: Request, base_model: str = "", steps: int = 1) -> Response:
        async def work(principal: Principal) -> Any:
            if not 1 <= steps <= studio.bounds.max_steps:
                raise GatewayError(400, f"steps must be 1 to {studio.bounds.max_steps}.",
                                   "invalid_request_error", "invalid_request", "steps")
            return {"estimate": await studio.estimate(principal, base_model, steps)}
        return await handle("estimate", request, None, work)

    # -- datasets -------------------------------------------------------------------------------
    @router.get("/datasets")
    async def datasets(request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return {"data": await asyncio.to_thread(studio.list_uploads, principal)}
        return await handle("datasets.list", request, None, work)

    @router.post("/datasets", openapi_extra=RAW_BODY)
    async def upload(request: Request, filename: str = "", kind: str = "sft") -> Response:
        async def work(principal: Principal) -> Any:
            label = filename.replace("\x00", "")[:200]
            return await studio.create_upload(principal, label, kind, request.stream())
        return await handle("datasets.upload", request, filename[:64] or None, work, 201)

    @router.get("/datasets/from-feedback")
    async def feedback_preview(request: Request, kind: str = "sft", model: str | None = None
                               ) -> Response:
        """What a data file from the project's feedback would hold: counts and examples."""
        async def work(principal: Principal) -> Any:
            return await asyncio.to_thread(studio.feedback_preview, principal, kind, model)
        return await handle("datasets.feedback.preview", request, None, work)

    @router.post("/datasets/from-feedback", openapi_extra=body_of(FeedbackData))
    async def from_feedback(request: Request) -> Response:
        """A data file made of the project's ratings, corrections and choices."""
        async def work(principal: Principal) -> Any:
            body = await parsed(request, FeedbackData)
            return await studio.dataset_from_feedback(principal, body.kind, body.model)
        return await handle("datasets.feedback", request, None, work, 201)

    @router.get("/datasets/{upload_id}")
    async def dataset(upload_id: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return await asyncio.to_thread(studio.upload, principal, upload_id)
        return await handle("datasets.read", request, upload_id[:64], work)

    @router.put("/datasets/{upload_id}/mapping", openapi_extra=body_of(ColumnMapping))
    async def mapping(upload_id: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            body = await parsed(request, ColumnMapping)
            return await studio.map_columns(principal, upload_id, body.mapping)
        return await handle("datasets.map", request, upload_id[:64], work)

    @router.delete("/datasets/{upload_id}")
    async def delete_dataset(upload_id: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            await asyncio.to_thread(studio.delete_upload, principal, upload_id)
            return {"id": upload_id, "deleted": True}
        return await handle("datasets.delete", request, upload_id[:64], work)

    # -- trainings ------------------------------------------------------------------------------
    @router.get("/trainings")
    async def trainings(request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            trainings = await asyncio.to_thread(studio.trainings_of, principal)
            return {"data": [studio.describe(t) for t in trainings]}
        return await handle("trainings.list", request, None, work)

    @router.post("/trainings", openapi_extra=body_of(TrainingRequest))
    async def launch(request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return await studio.launch(principal, await parsed(request, TrainingRequest))
        return await handle("trainings.launch", request, None, work, 201)

    @router.get("/trainings/{name}")
    async def results(name: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return await asyncio.to_thread(studio.results, principal, name)
        return await handle("trainings.results", request, name[:64], work)

    @router.post("/trainings/{name}/promote")
    async def promote(name: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return await studio.promote(principal, name)
        return await handle("trainings.promote", request, name[:64], work, 202)

    # -- documents ------------------------------------------------------------------------------
    @router.get("/monitor")
    async def monitor(request: Request, hours: str = "24", window: str = "3600") -> Response:
        """This project's own requests to the models it may use, per window: the Monitor
        page's series, and the thresholds the platform's monitors hold them to."""
        async def work(principal: Principal) -> Any:
            span, step = query_int(hours, "hours"), query_int(window, "window")
            if span is None or step is None or not 1 <= span <= 744 \
                    or step not in MONITOR_WINDOWS:
                raise GatewayError(400, "hours is 1 to 744 and window one of "
                                        f"{', '.join(map(str, MONITOR_WINDOWS))} seconds.",
                                   "invalid_request_error", "invalid_request", "window")
            models = sorted(gateway.tenancy.granted(principal.project_id))
            until = time.time()
            await asyncio.to_thread(gateway.stored.written)
            read = await asyncio.to_thread(series, gateway.sessions, until - span * 3600,
                                           until, step, models, principal.project_id)
            return {**read, "thresholds": await asyncio.to_thread(studio.thresholds, models)}
        return await handle("monitor", request, None, work)

    @router.get("/collections")
    async def collections(request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return {"data": await asyncio.to_thread(studio.documents.collections, principal)}
        return await handle("collections.list", request, None, work)

    @router.get("/collections/{collection}/documents")
    async def documents(collection: str, request: Request) -> Response:
        def listed(principal: Principal) -> list[dict[str, Any]]:
            studio.documents.corpus(principal, collection)
            docs = studio.documents.with_chunks(studio.documents.list(principal, collection))
            return [{k: v for k, v in d.items() if k != "path"} for d in docs]

        async def work(principal: Principal) -> Any:
            return {"data": await asyncio.to_thread(listed, principal)}
        return await handle("documents.list", request, collection[:64], work)

    @router.post("/collections/{collection}/documents", openapi_extra=RAW_BODY)
    async def upload_document(collection: str, request: Request, filename: str = ""
                              ) -> Response:
        async def work(principal: Principal) -> Any:
            label = filename.replace("\x00", "")[:200]
            return await studio.documents.upload(principal, collection, label,
                                                 request.stream())
        return await handle("documents.upload", request, collection[:64], work, 201)

    @router.delete("/collections/{collection}/documents/{doc_id}")
    async def delete_document(collection: str, doc_id: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return await studio.documents.delete(principal, collection, doc_id)
        return await handle("documents.delete", request, collection[:64], work)

    # -- runs -----------------------------------------------------------------------------------
    @router.get("/runs")
    async def runs(request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return {"data": await studio.runs(principal)}
        return await handle("runs.list", request, None, work)

    @router.get("/runs/{run_id}")
    async def run(run_id: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            return await studio.run_log(principal, run_id)
        return await handle("runs.read", request, run_id[:64], work)

    @router.post("/runs/{run_id}/cancel")
    async def cancel(run_id: str, request: Request) -> Response:
        async def work(principal: Principal) -> Any:
            await studio.cancel(principal, run_id)
            return {"id": run_id, "canceling": True}
        return await handle("runs.cancel", request, run_id[:64], work, 202)

    return router


def studio_page(router: APIRouter) -> None:
    """/studio opens the Studio's page (served with the playground's files)."""
    @router.get("/studio", include_in_schema=False)
    async def page() -> Response:
        return RedirectResponse("/playground/studio.html")
