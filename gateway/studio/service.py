"""What a Studio member may do, independent of HTTP: uploads and their curation reports,
trainings (validated against the platform's config, then launched on Dagster), runs, results and
promotion. Every object lives under the caller's project id, so another project's upload, training
or run is simply not found: the same 404 as a missing one.

Roles: viewers read; members upload, train and cancel; owners also promote and delete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.datasets import TrafficSource
from config.gateway import GatewaySettings
from config.loading import accepted_trainings, format_errors, load_platform
from config.objectives import OBJECTIVES
from config.schema import FactoryConfig
from config.studio import (
    EFFORTS,
    STUDIO_OBJECTIVES,
    TASKS,
    TRAINING_NAME,
    TRAININGS,
    UPLOAD_ID,
    StoredTraining,
    TrainingRequest,
    full_name,
    merge_trainings,
    parse_trainings,
    training_key,
    uploads_prefix,
)
from curation.tokens import TokenCounter
from gateway.protocol import GatewayError
from gateway.rag import Retriever
from gateway.stored_completions import StoredCompletions
from gateway.studio import uploads
from gateway.studio.dagster import KEY_TAG, KIND_TAG, PROJECT_TAG, SUBJECT_TAG, DagsterClient
from gateway.studio.documents import Documents
from gateway.studio.roles import not_found, require
from gateway.tenancy import Principal, Tenancy
from ingest.sources import RawRecord
from ingest.traffic import GatewayTraffic
from store.artifacts import ArtifactStore
from store.backends import ArtifactMissing
from store.keys import ref_key
from store.registry import Registry

log = logging.getLogger("gateway.studio")
MAX_LOSS_LINE = 4000  # the trainer's dict of one logging step; longer lines are not parsed
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Studio:
    def __init__(self, settings: GatewaySettings, tenancy: Tenancy, retriever: Retriever,
                 dagster: DagsterClient | None = None,
                 kept: StoredCompletions | None = None) -> None:
        self.settings, self.bounds, self.tenancy = settings, settings.studio, tenancy
        self.kept = kept  # the gateway's stored completions: datasets from feedback
        self.retriever = retriever  # the gateway's own Chroma client: chunk counts
        self.store = ArtifactStore(url=settings.object_store, endpoint_url=settings.s3_endpoint_url,
                                 cache_dir=str(Path(settings.chroma_path).parent / "cache"))
        self.dagster = dagster or DagsterClient(settings.studio.dagster_url)
        self.scratch = Path(settings.chroma_path).parent / "studio-incoming"
        self._counters: dict[str, tuple[TokenCounter, int | None, str]] = {}
        self.documents = Documents(self)
        self._locks: dict[int, asyncio.Lock] = {}

    # -- the platform ---------------------------------------------------------------------------
    def require_enabled(self) -> str:
        """The platform's factory.yaml; without one the Studio's routes are not there."""
        path = self.bounds.platform_config
        if not path:
            raise GatewayError(404, "The Studio is not enabled on this gateway (start it "
                                    "with the platform's factory.yaml).",
                               "invalid_request_error", "studio_unavailable")
        return path

    def platform(self) -> tuple[dict[str, Any], FactoryConfig]:
        """factory.yaml as written (raw) and as validated, without the Studio's trainings."""
        return load_platform(self.require_enabled())

    def base_models(self, config: FactoryConfig) -> list[str]:
        served = {d.base_model for d in config.deployments.values()}
        allowed = self.bounds.base_models or sorted(served)
        return [m for m in allowed if m in config.base_models
                and not config.base_models[m].speech]

    def options(self) -> dict[str, Any]:
        _, config = self.platform()
        return {
            "base_models": self.base_models(config),
            "tasks": {name: t.model_dump() for name, t in TASKS.items()},
            "objectives": {o: {"description": OBJECTIVES[o].description,
                               "data": list(OBJECTIVES[o].data)} for o in STUDIO_OBJECTIVES},
            "efforts": {name: p.model_dump() for name, p in EFFORTS.items()},
            "bounds": {"max_steps": self.bounds.max_steps,
                       "max_upload_bytes": self.bounds.max_upload_bytes,
                       "max_rows": self.bounds.max_rows,
                       "max_runs_in_flight": self.bounds.max_runs_in_flight},
        }

    # -- uploads --------------------------------------------------------------------------------
    def _upload_key(self, principal: Principal, upload_id: str, name: str = "upload.json") -> str:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise not_found("dataset")
        return f"{uploads_prefix(principal.project_id)}/{upload_id}/{name}"

    def list_uploads(self, principal: Principal) -> list[dict[str, Any]]:
        prefix = f"{uploads_prefix(principal.project_id)}/"
        metas = [m for k in self.store.list(prefix) if k.endswith("/upload.json")
                 and (m := self.read_if_there(k)) is not None]
        return sorted(({k: v for k, v in m.items() if k != "report"} | {
            "rows_kept": m["report"]["rows_kept"], "quarantined": m["report"]["quarantined"],
            "needs_mapping": m["report"]["needs_mapping"]} for m in metas),
            key=lambda m: -m["created_at"])

    def read_if_there(self, key: str) -> Any:
        """An object listed a moment ago may be deleted by now (a delete racing a listing)."""
        try:
            return self.store.get_json(key)
        except ArtifactMissing:
            return None

    def upload(self, principal: Principal, upload_id: str) -> dict[str, Any]:
        try:
            return self.store.get_json(self._upload_key(principal, upload_id))
        except ArtifactMissing:
            raise not_found("dataset") from None

    async def create_upload(self, principal: Principal, label: str, kind: str,
                            chunks: AsyncIterator[bytes]) -> dict[str, Any]:
        require(principal, "member", "upload data")
        async with self._lock(principal):  # the count and bytes checks hold for the upload
            return await self._create_upload(principal, label, kind, chunks)

    async def _create_upload(self, principal: Principal, label: str, kind: str,
                             chunks: AsyncIterator[bytes]) -> dict[str, Any]:
        suffix = uploads.suffix_of(label)
        if kind not in uploads.MAPPABLE:
            raise uploads.bad_upload(f"kind must be one of {', '.join(uploads.MAPPABLE)}.",
                                     "invalid_request", "kind")
        room = self._room(principal)
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = await uploads.receive(chunks, min(self.bounds.max_upload_bytes, room),
                                     self.scratch, suffix)
        try:
            upload_id = uuid.uuid4().hex
            meta = await asyncio.to_thread(self._curate_and_store, principal, upload_id, path,
                                           label, kind, suffix)
        finally:
            path.unlink(missing_ok=True)
        return meta

    def _room(self, principal: Principal) -> int:
        """Bytes the project may still upload; a 403 at its count of data files."""
        existing = self.list_uploads(principal)
        if len(existing) >= self.bounds.max_uploads:
            raise GatewayError(403, f"This project has {len(existing)} data files, its limit; "
                                    "delete one first.", "permission_error", "quota_exceeded")
        return self.bounds.max_project_bytes - sum(m["bytes"] for m in existing)

    def thresholds(self, models: list[str]) -> dict[str, dict[str, float]]:
        """What the platform's monitors hold each of `models` to (the deployment serving it)."""
        _, config = self.platform()
        found = {}
        for spec in config.deployments.values():
            if spec.monitor is None:
                continue
            for model in {spec.base_model, *spec.adapters} & set(models):
                found[model] = {"error_rate": spec.monitor.thresholds.error_rate,
                                "latency_p99_ms": spec.monitor.thresholds.latency_p99_ms,
                                "min_feedback_score": spec.monitor.thresholds.min_feedback_score}
        return found

    # -- data files from feedback ---------------------------------------------------------------
    def feedback_rows(self, principal: Principal, kind: str, model: str | None
                      ) -> tuple[list[dict[str, Any]], int]:
        """The project's feedback as rows of `kind` (ingest/traffic.py's rules), and how much
        feedback there was."""
        if kind not in uploads.MAPPABLE:
            raise uploads.bad_upload(f"kind must be one of {', '.join(uploads.MAPPABLE)}.",
                                     "invalid_request", "kind")
        if self.kept is None:
            raise GatewayError(404, "This gateway keeps no chats.", "invalid_request_error",
                               "not_found")
        kept = self.kept
        traffic = GatewayTraffic(lambda _, m, since, after: kept.export(
            principal.project_id, m, since, after), kind)
        source = TrafficSource(traffic=principal.project, model=model)
        rows = [item.data for item in traffic.records(source) if isinstance(item, RawRecord)]
        return rows, traffic.read[principal.project]["feedback"]

    def feedback_preview(self, principal: Principal, kind: str, model: str | None
                         ) -> dict[str, Any]:
        rows, feedback = self.feedback_rows(principal, kind, model)
        return {"kind": kind, "model": model, "feedback": feedback, "rows": len(rows),
                "examples": rows[:uploads.PREVIEW_ROWS]}

    async def dataset_from_feedback(self, principal: Principal, kind: str, model: str | None
                                    ) -> dict[str, Any]:
        """A data file made of the project's feedback, curated and reported like an upload:
        train on it as on any other."""
        require(principal, "member", "make data")
        async with self._lock(principal):
            rows, _ = await asyncio.to_thread(self.feedback_rows, principal, kind, model)
            if not rows:
                raise GatewayError(400, f"No feedback of this project makes {kind} rows yet: "
                                        "rate, correct or compare replies in the playground.",
                                   "invalid_request_error", "no_feedback", "kind")
            room = self._room(principal)
            self.scratch.mkdir(parents=True, exist_ok=True)
            path = self.scratch / f"{uuid.uuid4().hex}.jsonl"
            try:
                path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                if path.stat().st_size > min(self.bounds.max_upload_bytes, room):
                    raise GatewayError(413, "The feedback makes a file larger than this project "
                                            "may upload; filter by model.",
                                       "invalid_request_error", "too_large")
                label = f"feedback-{kind}{'-' + model if model else ''}.jsonl"
                return await asyncio.to_thread(self._curate_and_store, principal,
                                               uuid.uuid4().hex, path, label, kind, ".jsonl")
            finally:
                path.unlink(missing_ok=True)

    def token_budget(self) -> tuple[TokenCounter | None, int | None, str | None]:
        """The first offered base model's tokenizer and context, once it has been built: a
        report's token lengths are what training will see (None before the first build)."""
        _, config = self.platform()
        for model in self.base_models(config):
            try:
                ref = self.store.read_ref(f"base_model/{model}")
            except ArtifactMissing:
                continue
            if ref["prefix"] not in self._counters:
                folder = self.store.local_dir(ref["prefix"])
                context = json.loads((folder / "config.json").read_text()).get(
                    "max_position_embeddings")
                self._counters[ref["prefix"]] = (TokenCounter(folder), context, model)
            return self._counters[ref["prefix"]]
        return None, None, None

    def _curate_and_store(self, principal: Principal, upload_id: str, path: Path, label: str,
                          kind: str, suffix: str) -> dict[str, Any]:
        rows = uploads.check_structure(path, suffix, label, self.bounds)
        counter, context, model = self.token_budget()
        report = uploads.curate_upload(path, label, kind, "auto", {}, counter, context,
                                       self.bounds)
        report["tokenizer"] = model
        meta = {"id": upload_id, "label": label, "kind": kind, "suffix": suffix,
                "bytes": path.stat().st_size, "rows": rows, "format": "auto", "field_map": {},
                "created_by": principal.user, "created_at": time.time(), "report": report}
        self.store.backend.put_file(self._upload_key(principal, upload_id, f"data{suffix}"),
                                    path)
        self.store.put_json(self._upload_key(principal, upload_id), meta)  # last: complete
        return meta

    async def map_columns(self, principal: Principal, upload_id: str,
                          mapping: dict[str, str]) -> dict[str, Any]:
        require(principal, "member", "map columns")
        meta = self.upload(principal, upload_id)
        fmt, field_map = uploads.mapping_for(meta["kind"], mapping, meta["report"]["columns"])
        return await asyncio.to_thread(self._recurate, principal, meta, fmt, field_map)

    def _recurate(self, principal: Principal, meta: dict[str, Any], fmt: str,
                  field_map: dict[str, str]) -> dict[str, Any]:
        key = self._upload_key(principal, meta["id"], f"data{meta['suffix']}")
        self.scratch.mkdir(parents=True, exist_ok=True)
        local = self.scratch / f"{uuid.uuid4().hex}{meta['suffix']}"
        try:
            self.store.backend.get_file(key, local)
            counter, context, model = self.token_budget()
            meta["report"] = uploads.curate_upload(local, meta["label"], meta["kind"], fmt,
                                                   field_map, counter, context, self.bounds)
            meta["report"]["tokenizer"] = model
        finally:
            local.unlink(missing_ok=True)
        meta |= {"format": fmt, "field_map": field_map}
        self.store.put_json(self._upload_key(principal, meta["id"]), meta)
        return meta

    def delete_upload(self, principal: Principal, upload_id: str) -> None:
        require(principal, "owner", "delete data")
        meta = self.upload(principal, upload_id)
        users = [t.request.name for t in self.trainings_of(principal)
                 if t.request.dataset == upload_id]
        if users:
            raise GatewayError(409, f"Training(s) {', '.join(users)} read this data; it stays "
                                    "while they exist.", "invalid_request_error", "in_use")
        self.store.delete_prefix(f"{uploads_prefix(principal.project_id)}/{meta['id']}")

    # -- trainings ------------------------------------------------------------------------------
    def all_trainings(self) -> list[StoredTraining]:
        return parse_trainings(self.store.list(f"{TRAININGS}/"), self.store.get_json)

    def trainings_of(self, principal: Principal) -> list[StoredTraining]:
        return [t for t in self.all_trainings() if t.project_id == principal.project_id]

    def training(self, principal: Principal, name: str) -> StoredTraining:
        if not re.fullmatch(TRAINING_NAME, name) or len(name) > 40:
            raise not_found("training")
        try:
            return StoredTraining.model_validate(
                self.store.get_json(training_key(principal.project_id, name)))
        except (ArtifactMissing, ValidationError):
            raise not_found("training") from None

    def _source(self, principal: Principal, meta: dict[str, Any]) -> dict[str, str]:
        key = self._upload_key(principal, meta["id"], f"data{meta['suffix']}")
        local = self.store.backend.local_path(key)
        return {"path": str(local)} if local else {"s3": f"{self.store.url.rstrip('/')}/{key}"}

    async def launch(self, principal: Principal, request: TrainingRequest) -> dict[str, Any]:
        """One launch at a time per project (in this gateway process): two at once can pass
        neither the in-flight limit nor the name check together."""
        require(principal, "member", "train")
        async with self._lock(principal):
            return await self._launch(principal, request)

    def _lock(self, principal: Principal) -> asyncio.Lock:
        return self._locks.setdefault(principal.project_id, asyncio.Lock())

    async def _launch(self, principal: Principal, request: TrainingRequest) -> dict[str, Any]:
        raw, config = self.platform()
        meta = self.upload(principal, request.dataset)
        if meta["report"]["needs_mapping"]:
            raise uploads.bad_upload("Map the file's columns before training on it.",
                                     "needs_mapping", "dataset")
        if request.base_model not in self.base_models(config):
            raise uploads.bad_upload(f"Base model '{request.base_model}' is not offered; choose "
                                     f"one of {', '.join(self.base_models(config))}.",
                                     "invalid_request", "base_model")
        params = request.chosen()
        if params.max_steps > self.bounds.max_steps:
            raise uploads.bad_upload(f"max_steps may be at most {self.bounds.max_steps}.",
                                     "invalid_request", "hyperparameters.max_steps")
        try:
            self.store.get_json(training_key(principal.project_id, request.name))
        except ArtifactMissing:
            pass
        else:
            raise GatewayError(409, f"This project already has a training named "
                                    f"'{request.name}'.", "invalid_request_error",
                               "already_exists", "name")
        full = full_name(principal.project, request.name)
        if any(full in table for table in (config.datasets, config.adapters, config.evaluations,
                                           config.mixtures)):  # the platform's own, not theirs
            raise GatewayError(409, f"The name '{full}' is taken on this platform; choose "
                                    "another.", "invalid_request_error", "already_exists", "name")
        if len(self.trainings_of(principal)) >= self.bounds.max_trainings:
            raise GatewayError(403, f"This project keeps {self.bounds.max_trainings} trainings, "
                                    "its limit.", "permission_error", "quota_exceeded")
        training = StoredTraining(
            project=principal.project, project_id=principal.project_id,
            created_by=principal.user, created_at=time.time(), request=request,
            data_kind=meta["kind"], data_format=meta["format"], field_map=meta["field_map"],
            source=self._source(principal, meta))
        self._validate(raw, config, training)
        await self._check_in_flight(principal)
        key = training_key(principal.project_id, request.name)
        self.store.put_json(key, training.model_dump())
        name = training.full_name
        assets = [["dataset", name], ["adapter", name], ["evaluation", name]]
        if not self.store.exists(ref_key("base_model", request.base_model)):
            assets.insert(0, ["base_model", request.base_model])  # its first use builds it
        try:
            run_id = await self.launch_run(principal, assets, "train", request.name)
        except BaseException:
            self.store.backend.delete(key)  # not launched: nothing of it stays
            raise
        self.tenancy.grant(principal.project, name, "model")
        return {"training": self.describe(training), "run_id": run_id}

    def _validate(self, raw: dict[str, Any], config: FactoryConfig,
                  training: StoredTraining) -> None:
        """The training beside the stored ones that still validate: the schema's own checks
        (servability, objective vs data, names) as messages for the member."""
        try:
            accepted, _ = accepted_trainings(raw, self.all_trainings())
            FactoryConfig.model_validate(merge_trainings(raw, [*accepted, training]))
        except ValidationError as exc:
            problems = format_errors(Path("the platform"), exc).splitlines()[1:]
            raise GatewayError(400, "The training does not fit the platform: " + "; ".join(
                p.strip() for p in problems), "invalid_request_error", "invalid_training"
            ) from exc

    async def _check_in_flight(self, principal: Principal) -> None:
        busy = [r for r in await self.dagster.runs(principal.project) if r.in_flight]
        if len(busy) >= self.bounds.max_runs_in_flight:
            raise GatewayError(429, f"This project has {len(busy)} run(s) in flight, its limit; "
                                    "wait for one to finish or cancel it.",
                               "rate_limit_error", "runs_in_flight")

    async def launch_run(self, principal: Principal, assets: list[list[str]], kind: str,
                         subject: str) -> str:
        _, config = self.platform()
        location = await self.dagster.location()
        await self.dagster.reload(location)  # returns once the location has re-read the store
        return await self.dagster.launch(location, assets, {
            PROJECT_TAG: principal.project, KEY_TAG: str(principal.key_id), KIND_TAG: kind,
            SUBJECT_TAG: subject, "dagster/user": principal.user,
            # the implicit asset job has no tags of its own: run monitoring stops it after this
            "dagster/max_runtime": str(config.compute.max_runtime_s)})

    def describe(self, training: StoredTraining) -> dict[str, Any]:
        return {"name": training.request.name, "model": training.full_name,
                "created_by": training.created_by, "created_at": training.created_at,
                **training.request.model_dump(), "hyperparameters": training.request.chosen()
                .model_dump()}

    # -- results and promotion ---------------------------------------------------------------
    def results(self, principal: Principal, name: str) -> dict[str, Any]:
        training = self.training(principal, name)
        model = training.full_name
        out: dict[str, Any] = {"training": self.describe(training), "evaluation": None,
                               "card": None, "champion": None}
        try:
            ref = self.store.read_ref(f"evaluation/{model}")
        except ArtifactMissing:
            return out
        report = json.loads(self.store.backend.get_bytes(f"{ref['prefix']}/report.json"))
        results = report["results"]
        samples = {who: r.get("samples", [])[:10] for who, r in results.items()}
        out["evaluation"] = {
            "primary": TASKS[training.request.task].primary,
            "scores": ref["scores"], "decision": report["decision"],
            "gate_passed": ref["gate_passed"], "samples": samples}
        out["champion"] = (Registry(self.store).champion(model) or {}).get("version")
        card = f"{ref['candidate_prefix']}/README.md"
        out["card"] = self.store.backend.get_bytes(card).decode() \
            if self.store.exists(card) else None
        return out

    async def promote(self, principal: Principal, name: str) -> dict[str, Any]:
        require(principal, "owner", "promote")
        async with self._lock(principal):
            return await self._promote(principal, name)

    async def _promote(self, principal: Principal, name: str) -> dict[str, Any]:
        training = self.training(principal, name)
        model = training.full_name
        try:
            ref = self.store.read_ref(f"evaluation/{model}")
        except ArtifactMissing:
            raise GatewayError(409, "This training has not been evaluated yet.",
                               "invalid_request_error", "not_evaluated") from None
        if not ref["gate_passed"]:
            raise GatewayError(409, f"The gate did not pass: {ref['gate']}",
                               "invalid_request_error", "gate_failed")
        _, config = self.platform()
        deployments = [["deployment", d] for d, spec in config.deployments.items()
                       if spec.base_model == training.request.base_model]
        await self._check_in_flight(principal)
        run_id = await self.launch_run(principal, [["promotion", model], *deployments],
                                        "promote", name)
        return {"run_id": run_id, "model": model}

    async def estimate(self, principal: Principal, base_model: str, steps: int
                       ) -> dict[str, Any] | None:
        """How long `steps` would take, scaled from this project's last finished training on
        the same base model (its adapter step's own time, start-up included); None before one."""
        trainings = {t.request.name: t for t in self.trainings_of(principal)}
        for run in await self.dagster.runs(principal.project):
            training = trainings.get(run.tags.get(SUBJECT_TAG, ""))
            if run.status != "SUCCESS" or run.tags.get(KIND_TAG) != "train" or not training \
                    or training.request.base_model != base_model:
                continue
            step = next((s for s in run.steps if s["stepKey"].startswith("adapter__")
                         and s.get("endTime") and s.get("startTime")), None)
            if step is None:
                continue
            seconds = step["endTime"] - step["startTime"]
            measured = training.request.chosen().max_steps
            return {"seconds": round(seconds * steps / measured), "run_id": run.run_id,
                    "measured_steps": measured, "measured_seconds": round(seconds)}
        return None

    def chunk_counts(self, collections: set[str]) -> dict[tuple[str, str], int]:
        return self.retriever.chunks_per_source(collections) if collections else {}

    # -- runs -----------------------------------------------------------------------------------
    async def runs(self, principal: Principal) -> list[dict[str, Any]]:
        return [r.as_json() for r in await self.dagster.runs(principal.project)]

    async def run_log(self, principal: Principal, run_id: str) -> dict[str, Any]:
        run = await self.dagster.run(principal.project, run_id) \
            if RUN_ID.fullmatch(run_id) else None
        if run is None:
            raise not_found("run")
        events = await self.dagster.logs(run_id)
        messages = [{"time": e.get("timestamp"), "level": e.get("level"),
                     "step": e.get("stepKey"), "message": failure_text(e)}
                    for e in events if e.get("message")]
        return {"run": run.as_json(), "log": messages[-500:], "loss": loss_curve(messages)}

    async def cancel(self, principal: Principal, run_id: str) -> None:
        require(principal, "member", "cancel runs")
        if not RUN_ID.fullmatch(run_id) or await self.dagster.run(principal.project,
                                                                 run_id) is None:
            raise not_found("run")
        await self.dagster.terminate(run_id)


def failure_text(event: dict[str, Any]) -> str:
    """A log line; a failed step's line carries the step's own error message."""
    error = (event.get("error") or {}).get("message")
    return f"{event['message']}\n{error.strip()}" if error else event["message"]


def loss_curve(messages: list[dict[str, Any]]) -> dict[str, list[list[float | None]]]:
    """(step, loss), (step, eval loss) and, for reinforcement, (step, mean reward, its spread
    over the sampled replies, KL to the start, mean reply tokens) from the trainer's log lines,
    as Axolotl prints them: `{'loss': 1.23, ..., 'epoch': 0.5}` per logging step."""
    train: list[list[float]] = []
    evaluation: list[list[float]] = []
    reward: list[list[float | None]] = []
    for m in messages:
        text = m.get("message") or ""
        start = text.find("{'")
        if start < 0 or "loss'" not in text or len(text) > MAX_LOSS_LINE:
            continue
        try:
            entry = ast_literal(text[start:text.rfind("}") + 1])
            loss = finite(entry.get("loss"))
            eval_loss = finite(entry.get("eval_loss"))
            mean_reward = finite(entry.get("reward"))
            sampled = [finite(entry.get(k)) for k in ("reward_std", "kl",
                                                      "completions/mean_length")]
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            continue  # a line that only looks like the trainer's
        if loss is not None:
            train.append([len(train) + 1, loss])
        if eval_loss is not None:
            evaluation.append([len(train), eval_loss])
        if mean_reward is not None:
            reward.append([len(train), mean_reward, *sampled])  # None: not logged
    return {"train": train, "eval": evaluation, "reward": reward}


def finite(value: Any) -> float | None:
    """A logged number (the trainer prints some as strings); None when absent, NaN or inf."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def ast_literal(text: str) -> dict[str, Any]:
    import ast

    value = ast.literal_eval(text)
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return value
