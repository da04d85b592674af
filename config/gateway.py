"""The `gateway:` section of factory.yaml: the gateway's settings and the ceilings it enforces.

Part of the one schema (config/schema.py holds it as `FactoryConfig.gateway`), so the factory and
the gateway read the file the same way; secrets come from environment variables named here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_messages: int = Field(64, ge=1)
    max_prompt_chars: int = Field(32_000, ge=16)
    max_tokens: int = Field(1024, ge=1)
    max_n: int = Field(4, ge=1)
    max_embedding_inputs: int = Field(64, ge=1)
    max_prompts: int = Field(16, ge=1, description="prompts in one /v1/completions request")
    max_json_depth: int = Field(32, ge=4, description="nesting of a request body")
    max_number_digits: int = Field(24, ge=4, description="digits of one JSON number")


# Upper bounds of the quota fields: what PostgreSQL's 32-bit integer columns hold.
INT32 = 2**31 - 1


class ProjectQuota(BaseModel):
    """A project's ceilings (set by the platform admin; these are the defaults)."""

    model_config = ConfigDict(extra="forbid")

    rpm: int = Field(1200, ge=1, le=INT32, description="requests per minute, all keys")
    tpm: int = Field(400_000, ge=1, le=INT32, description="tokens per minute, all keys")
    max_keys: int = Field(50, ge=1, le=100_000, description="active keys")
    max_in_flight: int = Field(32, ge=1, le=100_000, description="requests in flight, all keys")
    audio_seconds_per_day: int = Field(
        36_000, ge=0, le=INT32, description="seconds of audio transcribed per UTC day, all keys")
    # kept chats (gateway/capture.py): past any bound the oldest go first
    capture_rows: int = Field(100_000, ge=0, le=INT32, description="stored completions kept")
    capture_bytes: int = Field(200_000_000, ge=0, le=INT32,
                               description="bytes of stored completions kept")
    capture_days: int = Field(30, ge=1, le=3650, description="days a stored completion is kept")


class SpeechSettings(BaseModel):
    """/v1/audio/transcriptions: what an upload may be, checked while it streams and before it
    is decoded."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        default_factory=list, description="speech models (default: the base models of the "
                                          "speech deployments in factory.yaml)")
    max_upload_bytes: int = Field(25_000_000, ge=1024, description="one file (OpenAI's limit)")
    max_audio_seconds: float = Field(1800, gt=0, description="one file's decoded duration")
    window_seconds: float = Field(30, gt=1, le=30, description="the model's window: longer "
                                                               "audio is cut near silences")


class StudioSettings(BaseModel):
    """The Studio's bounds, set by the platform admin and held for every project: uploads are
    refused while streaming, launches before anything runs."""

    model_config = ConfigDict(extra="forbid")

    dagster_url: str = Field("http://127.0.0.1:3000",
                             description="the Dagster webserver the Studio launches runs on")
    platform_config: str | None = Field(
        None, description="the platform's factory.yaml (default: the one the gateway reads); "
                          "trainings are validated against it before they are stored")
    base_models: list[str] = Field(
        default_factory=list, description="base models members may train on; empty: every "
                                          "language model a deployment serves")
    max_upload_bytes: int = Field(20_000_000, ge=1024, description="one file")
    max_unpacked_bytes: int = Field(200_000_000, ge=1024,
                                    description="a Parquet file's data once decompressed")
    max_project_bytes: int = Field(200_000_000, ge=1024, description="all of a project's files")
    max_uploads: int = Field(20, ge=1, description="data files per project")
    max_rows: int = Field(50_000, ge=1, description="rows per data file")
    max_columns: int = Field(64, ge=1, description="columns per data file")
    max_line_bytes: int = Field(1_000_000, ge=1024, description="one line of a text file")
    max_runs_in_flight: int = Field(1, ge=1, description="a project's runs queued or running")
    max_trainings: int = Field(20, ge=1, description="trainings a project keeps")
    max_steps: int = Field(500, ge=1, description="training steps of one launch")
    max_document_bytes: int = Field(5_000_000, ge=1024, description="one uploaded document")
    max_documents: int = Field(200, ge=1, description="documents a project uploads")


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8080
    url: str | None = Field(
        None, pattern=r"^https?://", description="the gateway as the control plane reaches it "
        "(the usage asset and hot_adapters read its admin API); default http://host:port")
    database_url: str = Field("sqlite:///.factory/gateway.db",
                              description="postgresql+psycopg2://... in production")
    database_url_env: str = Field(
        "FACTORY_GATEWAY_DATABASE_URL", description="environment variable that, when set, is "
        "the database_url (keeps a password out of this file)")
    rate_limit_backend: str = Field("memory", description="memory or redis://host:port/db")
    upstreams: list[str] = Field(
        default_factory=list, description="fixed vLLM replica URLs; default: the replicas the "
                                          "deployments published in the object store")
    refresh_seconds: float = Field(10.0, gt=0, description="how often replicas are re-listed")
    object_store: str = Field("file://.factory/store",
                              description="where champions' model cards are read (the "
                                          "factory's storage.object_store by default)")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint of that store")
    chroma_path: str = Field(".factory/chroma", description="embedded Chroma folder (RAG)")
    chroma_url: str | None = Field(None, description="http://host:port of a Chroma server")
    embedding_model: str = "bundled:all-MiniLM-L6-v2"
    embedding_model_name: str = "all-MiniLM-L6-v2"
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="key/grant lookups cached; changes by other processes apply "
                               "within this time (0 = look up on every request)")
    default_rpm: int = Field(600, ge=1, le=INT32, description="a new key's rpm unless given")
    default_tpm: int = Field(200_000, ge=1, le=INT32, description="a new key's tpm unless given")
    project_quota: ProjectQuota = ProjectQuota()
    key_max_in_flight: int = Field(8, ge=1, description="requests in flight per key")
    auth_failures_per_minute: int = Field(
        30, ge=1, description="failed authentications per client address before 429")
    limits: Limits = Limits()
    studio: StudioSettings = StudioSettings()
    speech: SpeechSettings = SpeechSettings()
    upstream_api_key_env: str = Field(
        "FACTORY_VLLM_API_KEY", description="environment variable holding the key vLLM "
                                            "replicas require (`--api-key`); unset: none sent")
    audit_dead_letter: str = Field(
        ".factory/gateway-audit-dead-letter.jsonl",
        description="audit rows the database refused, one JSON object per line")
    admin_token_env: str = Field("FACTORY_GATEWAY_ADMIN_TOKEN",
                                 description="environment variable holding the admin token")
    otlp_endpoint: str | None = Field(
        None, pattern=r"^https?://", description="an OTLP/gRPC collector (http://host:4317): "
        "one span per request with the GenAI attributes; unset, no spans")
    otlp_service_name: str = Field("adapter-factory-gateway", max_length=128)

    @property
    def base_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")

    def with_environment(self) -> GatewaySettings:
        """The settings with what the environment sets (the database URL, when its variable is
        set); applied before command-line overrides, which win."""
        url = os.environ.get(self.database_url_env)
        return self.model_copy(update={"database_url": url}) if url else self

    @property
    def admin_token(self) -> str | None:
        return os.environ.get(self.admin_token_env) or None

    @property
    def upstream_api_key(self) -> str | None:
        return os.environ.get(self.upstream_api_key_env) or None

    def anchored(self, root: Path) -> GatewaySettings:
        """Relative SQLite, Chroma, dead-letter and object store paths made relative to `root`
        (the project file's folder)."""
        update: dict[str, Any] = {}
        url = self.database_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            update["database_url"] = f"sqlite:///{(root / url.removeprefix('sqlite:///')).resolve()}"
        for field in ("chroma_path", "audit_dead_letter"):
            if not Path(getattr(self, field)).is_absolute():
                update[field] = str((root / getattr(self, field)).resolve())
        platform = self.studio.platform_config
        if platform and not Path(platform).is_absolute():
            update["studio"] = self.studio.model_copy(
                update={"platform_config": str((root / platform).resolve())})
        store = self.object_store.removeprefix("file://")
        if self.object_store.startswith("file://") and not Path(store).is_absolute():
            update["object_store"] = f"file://{(root / store).resolve()}"
        return self.model_copy(update=update)
