"""The Studio against a recording Dagster and a fake vLLM replica, with its platform file and a
member's helpers: the `studio` fixture (a pytest plugin, tests/conftest.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.gateway import GatewaySettings, StudioSettings
from gateway.app import build_gateway
from gateway.serving import Gateway
from gateway.studio.service import Studio
from gateway.upstream import ReplicaPool
from tests.support.fake_dagster import RecordingDagster
from tests.support.fake_vllm import FakeVLLM
from tests.support.live_server import serve

ADMIN_ENV = "STUDIO_TEST_ADMIN_TOKEN"


PLATFORM = """
project: studio-test
storage: {object_store: file://store, work_dir: work}
base_models:
  tiny:
    source: local
    architecture: {hidden_size: 64, num_layers: 1, num_heads: 2, intermediate_size: 128,
                   vocab_size: 512, max_position_embeddings: 512}
deployments:
  local: {base_model: tiny, max_loras: 16}
corpora:
  handbook: {source: {path: docs}}
  policies: {source: {path: policies}}
  notes: {source: {path: notes}}
  lessons: {source: {path: lessons}}
  filings: {source: {generator: company_filings, documents: 4}}
datasets:
  lesson-text: {kind: pretrain, sources: [{corpus: lessons}], base_model: tiny}
"""


TICKETS = (
    "ticket,category\n"
    "My invoice shows the wrong amount,billing\n"
    "The app crashes when I open settings,bug\n"
    "Please mail me at jane.doe@example.com about my refund,billing\n"
    "How do I export my data?,question\n"
    "The login page times out,bug\n"
    "Where can I change my plan?,\n"                     # empty category: quarantined
    "Charged twice, this month,billing\n"                # unquoted comma: quarantined
    "The app crashes when I open settings,bug\n"         # duplicate
    + "".join(f"Ticket number {i} about a billing problem,billing\n" for i in range(12))
)


@dataclass
class Member:
    project: str
    key: str
    key_id: int


@dataclass
class StudioHarness:
    url: str
    gateway: Gateway
    dagster: RecordingDagster
    store: Path
    scratch: Path
    root: Path

    def member(self, role: str = "member", project: str | None = None,
               collections: tuple[str, ...] = ()) -> Member:
        tenancy = self.gateway.tenancy
        if project is None:
            project = f"s-{uuid.uuid4().hex[:8]}"
            tenancy.create_project(project, owner="owner")
            for name in collections:
                tenancy.grant(project, name, "collection")
        user = "owner" if role == "owner" else f"{role}-{uuid.uuid4().hex[:6]}"
        if role != "owner":
            tenancy.add_member(project, user, role)
        key = tenancy.create_key(project, user)
        return Member(project, key["key"], key["id"])

    def client(self, member: Member) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/studio/api", timeout=60, headers={
            "authorization": f"Bearer {member.key}",
            "x-forwarded-for": f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"})

    def stored_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.store)) for p in self.store.rglob("*")
                      if p.is_file())


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioHarness]:
    root = tmp_path_factory.mktemp("studio")
    (root / "factory.yaml").write_text(PLATFORM)
    for folder in ("docs", "policies", "notes", "lessons"):
        (root / folder).mkdir()
        (root / folder / "welcome.txt").write_text("Welcome to the support handbook.")
    with pytest.MonkeyPatch.context() as env:  # restored after the module
        env.setenv(ADMIN_ENV, "studio-admin-" + uuid.uuid4().hex)
        settings = GatewaySettings(
            database_url=f"sqlite:///{root / 'gateway.db'}", upstreams=["http://replica-1:8000"],
            refresh_seconds=3600, admin_token_env=ADMIN_ENV, object_store=f"file://{root}/store",
            chroma_path=str(root / "work" / "chroma"),
            audit_dead_letter=str(root / "dead-letter.jsonl"),
            studio=StudioSettings(platform_config=str(root / "factory.yaml"),
                                  max_upload_bytes=200_000, max_project_bytes=400_000,
                                  max_uploads=4, max_rows=500, max_columns=16,
                                  max_line_bytes=8192, max_steps=200, max_runs_in_flight=1,
                                  max_unpacked_bytes=10_000_000, max_trainings=3))
        fake = FakeVLLM()
        gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                      transport=fake.transport()))
        dagster = RecordingDagster()
        studio = Studio(settings, gateway.tenancy, gateway.retriever, dagster,  # type: ignore[arg-type]
                        kept=gateway.stored)
        for url, running in serve(settings, gateway, studio):
            yield StudioHarness(url, running, dagster, root / "store", studio.scratch, root)


def upload(c: httpx.Client, name: str, data: bytes, kind: str = "sft") -> httpx.Response:
    return c.post("/datasets", params={"filename": name, "kind": kind}, content=data)


def mapped_tickets(studio: StudioHarness, member: Member) -> dict:
    with studio.client(member) as c:
        first = upload(c, "tickets.csv", TICKETS.encode())
        assert first.status_code == 201, first.text
        report = first.json()["report"]
        assert report["needs_mapping"] and report["columns"] == ["ticket", "category"]
        mapped = c.put(f"/datasets/{first.json()['id']}/mapping",
                       json={"mapping": {"prompt": "ticket", "completion": "category"}})
    assert mapped.status_code == 200, mapped.text
    return mapped.json()


def publish_evaluation(store: Path, model: str, passed: bool) -> None:
    """What the evaluation asset publishes, as a Studio reader needs it."""
    prefix = f"evaluation/{model}/v1"
    sample = {"question": "My invoice is wrong", "target": "billing", "output": "billing",
              "correct": True}
    (store / prefix).mkdir(parents=True)
    (store / prefix / "report.json").write_text(json.dumps({
        "decision": {"passed": passed, "reference": "base", "reasons": ["exact_match 0.9 vs 0"]},
        "results": {"base": {"samples": [{**sample, "output": "It is", "correct": False}]},
                    "candidate": {"samples": [sample]}}}))
    (store / "refs" / "evaluation").mkdir(parents=True, exist_ok=True)
    (store / "refs" / "evaluation" / f"{model}.json").write_text(json.dumps({
        "prefix": prefix, "gate_passed": passed, "gate": "PROMOTE (vs base)",
        "candidate_prefix": f"adapter/{model}/v1",
        "scores": {"base": {"exact_match": 0.0}, "candidate": {"exact_match": 0.9}}}))
