"""Folder and S3 corpora indexed into Chroma (embedded and server): quarantine, incremental
re-index with deletions, and retrieval with top-k and MMR."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner
from dagster._core.scheduler.instigation import InstigatorType

from config.loading import load_config
from config.schema import FactoryConfig
from pipelines.cli import main
from pipelines.graph import make_definitions, resources_for
from resources.retrieval import open_index, retrieve
from tests.conftest import free_port, start_service
from tests.support.documents import DOCS
from tests.support.live_server import wait_until_up
from tests.support.projects import run_assets
from tests.support.ui import start_ui, stop_ui


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server (`chroma run`) on 127.0.0.1."""
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    url = f"http://127.0.0.1:{port}"
    proc = start_service(["chroma", "run", "--path", str(path), "--host", "127.0.0.1",
                          "--port", str(port)], f"{url}/api/v2/heartbeat")
    yield url
    proc.terminate()
    proc.wait(10)


def project(root: Path, chroma_url: str | None = None) -> FactoryConfig:
    (root / "docs").mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text)
    (root / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    storage: dict[str, Any] = {"object_store": "file://store", "work_dir": "work"}
    if chroma_url:
        storage["chroma_url"] = chroma_url
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": storage,
        "corpora": {"notes": {"source": {"path": "docs"}, "chunk_size": 64, "chunk_overlap": 8,
                              "top_k": 2}},
    }))
    return load_config(root / "factory.yaml")


def reindex(config: FactoryConfig) -> dict[str, Any]:
    """Each materialization's metadata by asset, and each check's as `<asset>:<check>` (with
    `passed` and `severity` added)."""
    result = run_assets(make_definitions(config), "corpus/notes", "index/notes")
    assert result.success
    out: dict[str, Any] = {e.asset_key.to_user_string(): {
        k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()}
    for check in result.get_asset_check_evaluations():
        out[f"{check.asset_key.to_user_string()}:{check.check_name}"] = {
            **{k: v.value for k, v in check.metadata.items()}, "passed": check.passed,
            "severity": check.severity, "description": check.description}
    return out


def sources(config: FactoryConfig, question: str, mmr: float | None = None) -> list[str]:
    index = open_index(resources_for(config)["chroma"].client(), "notes")
    return [r["source"] for r in retrieve(index, question, 2, mmr)]


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_folder_corpus_reindexes_only_what_changed(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("chroma_server") if backend == "server" else None
    config = project(tmp_path, url)
    first = reindex(config)
    corpus, index = first["corpus/notes"], first["index/notes"]
    assert corpus["documents"] == 3 and corpus["quarantined"] == 1
    quarantined = corpus["quarantine"][0]
    assert quarantined["file"] == "docs/broken.pdf" and quarantined["fix"]
    assert index["documents_added"] == 3 and index["chunks_embedded_this_run"] >= 3
    assert sources(config, "Who is the harbour master?")[0] == "docs/harbour.txt"

    docs = tmp_path / "docs"
    (docs / "bakery.md").write_text(DOCS["bakery.md"].replace("Marek Tamm", "Kadri Lepp"))
    (docs / "orchard.html").unlink()
    (docs / "vineyard.txt").write_text("Hill Gate Vineyard bottled 12,000 bottles of "
                                       "Solaris. The winemaker is Toomas Ilves.")
    second = reindex(config)["index/notes"]
    assert (second["documents_added"], second["documents_updated"], second["documents_deleted"],
            second["documents_unchanged"]) == (1, 1, 1, 1)
    assert second["chunks_embedded_this_run"] < index["chunks_embedded_this_run"] + 2
    collection = resources_for(config)["chroma"].client().get_collection("notes")
    stored = {m["source"] for m in collection.get(include=["metadatas"])["metadatas"]}
    assert stored == {"docs/harbour.txt", "docs/bakery.md", "docs/vineyard.txt"}
    assert sources(config, "Who is the winemaker?")[0] == "docs/vineyard.txt"
    index_obj = open_index(resources_for(config)["chroma"].client(), "notes")
    assert "Kadri Lepp" in retrieve(index_obj, "Who is the head baker?", 1)[0]["text"]

    unchanged = reindex(config)["index/notes"]
    assert unchanged["chunks_embedded_this_run"] == 0
    assert unchanged["documents_unchanged"] == 3


def test_mmr_trades_relevance_for_diversity(tmp_path: Path) -> None:
    config = project(tmp_path)
    docs = tmp_path / "docs"
    for i in range(3):  # near-duplicates of the harbour report crowd a plain top-k
        (docs / f"harbour-copy-{i}.txt").write_text(DOCS["harbour.txt"] + f" Copy {i}.")
    reindex(config)
    question = "Harbour master and cargo volume of Northwind Harbour Authority"
    plain = sources(config, question)
    diverse = sources(config, question, mmr=0.1)
    assert all("harbour" in s for s in plain)
    assert any("harbour" not in s for s in diverse)


def test_s3_corpus_indexes_objects(tmp_path: Path, s3_endpoint: str, s3_env: None) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="corpus-bucket")
    for name, text in DOCS.items():
        s3.put_object(Bucket="corpus-bucket", Key=f"notes/{name}", Body=text.encode())
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work",
                    "s3_endpoint_url": s3_endpoint},
        "corpora": {"notes": {"source": {"s3": "s3://corpus-bucket/notes/"}}}}))
    config = load_config(tmp_path / "factory.yaml")
    meta = reindex(config)
    assert meta["corpus/notes"]["documents"] == 3
    assert sources(config, "Who keeps the orchard?")[0] == "s3://corpus-bucket/notes/orchard.html"


@pytest.mark.slow
def test_daemon_sensor_reindexes_a_dropped_s3_file(tmp_path: Path, s3_endpoint: str,
                                                   s3_env: None) -> None:
    """The whole loop with Dagster's own daemon and webserver (`factory ui` = `dg dev`):
    an object lands in S3, the sensor fires, the index changes, a query finds it."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="inbox")
    s3.put_object(Bucket="inbox", Key="docs/harbour.txt", Body=DOCS["harbour.txt"].encode())
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work",
                    "s3_endpoint_url": s3_endpoint},
        "corpora": {"notes": {"source": {"s3": "s3://inbox/docs/"},
                              "watch": {"interval_s": 5}}},
        "schedules": {"automation_interval_s": 5}}))
    config = load_config(tmp_path / "factory.yaml")
    port = free_port()
    ui = start_ui(tmp_path, port)
    try:
        wait_until_serving(port, ui, tmp_path)
        runs = wait_for_runs(config, 1, ui, tmp_path)  # the first listing indexes what is there
        s3.put_object(Bucket="inbox", Key="docs/vineyard.txt", Body=(
            b"Hill Gate Vineyard bottled 12,000 bottles. The winemaker is Toomas Ilves."))
        runs = wait_for_runs(config, 2, ui, tmp_path)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert observed_changes(tmp_path) == "1 added, 0 updated, 0 removed"
        assert runs[0].tags["dagster/sensor_name"] == "automation"  # the index's condition
        assert sources(config, "Who is the winemaker?")[0] == "s3://inbox/docs/vineyard.txt"
        with dg.DagsterInstance.from_config(str(tmp_path / "work" / "dagster_home")) as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey(["index", "notes"]))
            assert event and event.asset_materialization
            meta = event.asset_materialization.metadata
            assert meta["documents_added"].value == 1 and meta["documents_unchanged"].value == 1
    finally:
        stop_ui(ui)






def wait_for_cursor(root: Path, sensor: str, ui: subprocess.Popen, timeout: float = 180
                    ) -> None:
    """Until the daemon has ticked `sensor` once (its cursor is stored)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert ui.poll() is None, (root / "dagster.log").read_text()[-3000:]
        with dg.DagsterInstance.from_config(str(root / "work" / "dagster_home")) as instance:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if any(s.instigator_name == sensor and s.instigator_data
                   and s.instigator_data.cursor for s in states):
                return
        time.sleep(2)
    raise AssertionError(f"{sensor} never ticked; log:\n"
                         + (root / "dagster.log").read_text()[-3000:])


@pytest.mark.slow
def test_changes_made_while_the_daemon_was_down_converge_in_one_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#36's scenario under Dagster's own daemon: `factory materialize`, the first tick starts
    nothing; the daemon is killed; one document is deleted (a question names it) and one added;
    after the restart one run applies both, the index equals the folder and the orphan question
    is the check's warning, not a failed run."""
    config = with_questions(tmp_path, [
        {"question": "Who is the harbour master?", "source": "harbour.txt"},
        {"question": "Who keeps the orchard?", "source": "orchard.html"}])
    raw = yaml.safe_load((tmp_path / "factory.yaml").read_text())
    raw["corpora"]["notes"]["watch"] = {"interval_s": 5}
    raw["schedules"] = {"automation_interval_s": 5}
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "factory.yaml")
    home = tmp_path / "work" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    done = CliRunner().invoke(main, ["materialize", "--config", str(tmp_path / "factory.yaml")])
    assert done.exit_code == 0, done.output

    port = free_port()
    ui = start_ui(tmp_path, port)
    try:
        wait_until_serving(port, ui, tmp_path)
        wait_for_cursor(tmp_path, "watch_corpus_notes", ui)
        wait_for_cursor(tmp_path, "automation", ui)  # its first tick is its baseline
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert len(instance.get_runs()) == 1  # only `factory materialize`'s own run
    finally:
        os.killpg(ui.pid, signal.SIGKILL)  # a crash: no shutdown, no last cursor write
        ui.wait(30)

    (tmp_path / "docs" / "orchard.html").unlink()
    (tmp_path / "docs" / "vineyard.txt").write_text(
        "Hill Gate Vineyard bottled 12,000 bottles of Solaris. The winemaker is Toomas Ilves.")
    ui = start_ui(tmp_path, port)
    try:
        wait_until_serving(port, ui, tmp_path)
        runs = wait_for_runs(config, 2, ui, tmp_path)
        time.sleep(12)  # two more ticks: nothing is repeated
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs()
            key = dg.AssetCheckKey(dg.AssetKey(["index", "notes"]), "retrieval_quality")
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [key])[key]
        assert len(runs) == 2 and runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert observed_changes(tmp_path) == "1 added, 0 updated, 1 removed"
        collection = resources_for(config)["chroma"].client().get_collection("notes")
        stored = {m["source"] for m in collection.get(include=["metadatas"])["metadatas"]}
        assert stored == {"docs/harbour.txt", "docs/bakery.md", "docs/vineyard.txt"}
        assert "docs/orchard.html" not in sources(config, "Who keeps the orchard? Liis Kask")
        assert sources(config, "Who is the winemaker?")[0] == "docs/vineyard.txt"
        check = record.event.dagster_event.event_specific_data
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert "'orchard.html'" in check.description
    finally:
        stop_ui(ui)


def wait_until_serving(port: int, ui: subprocess.Popen, root: Path, timeout: float = 180) -> None:
    """`dg dev` creates (and migrates) the instance's SQLite storage before it starts the
    webserver: opening the instance from here any earlier races that migration (seen as
    alembic's "more than one head")."""
    wait_until_up(f"http://127.0.0.1:{port}/server_info", ui, root / "dagster.log", timeout)


def observed_changes(root: Path) -> str:
    """What the watch sensor last recorded of the folder it watches."""
    with dg.DagsterInstance.from_config(str(root / "work" / "dagster_home")) as instance:
        (record,) = instance.fetch_observations(
            dg.AssetKey(["watched", "corpus", "notes"]), limit=1).records
        assert record.asset_observation is not None
        return str(record.asset_observation.metadata["changes"].value)


def wait_for_runs(config: FactoryConfig, count: int, ui: subprocess.Popen, root: Path,
                  timeout: float = 420) -> list[dg.DagsterRun]:
    """Newest first, once `count` sensor runs have finished."""
    home = root / "work" / "dagster_home"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert ui.poll() is None, (root / "dagster.log").read_text()[-3000:]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs()
            if len(runs) >= count and all(r.is_finished for r in runs):
                return runs
        time.sleep(3)
    raise AssertionError(f"no {count} finished sensor runs; log:\n"
                         + (root / "dagster.log").read_text()[-3000:])


def test_index_metadata_reports_hit_rate_on_generated_corpus(tmp_path: Path) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "corpora": {"notes": {"source": {"generator": "company_filings", "documents": 6,
                                         "seed": 1}}}}))
    check = reindex(load_config(tmp_path / "factory.yaml"))["index/notes:retrieval_quality"]
    assert check["questions"] == 18 and check["hit_at_5"] >= 0.9 and check["passed"]
    config = load_config(tmp_path / "factory.yaml")
    resources_for(config)["chroma"].client().delete_collection("notes")  # Chroma data lost:
    again = reindex(config)["index/notes"]  # the docstore must not claim it is still indexed
    assert again["documents_added"] == 6 and again["chunks_in_collection"] > 0


def test_questions_may_name_documents_inside_the_source(tmp_path: Path) -> None:
    """`harbour.txt` is the document `docs/harbour.txt`: scored as a hit, not a silent 0.0."""
    config = with_questions(tmp_path, [
        {"question": "Who is the harbour master?", "source": "harbour.txt"},
        {"question": "Who is the head baker of Blue Oven?", "source": "docs/bakery.md"}])
    check = reindex(config)["index/notes:retrieval_quality"]
    assert check["questions"] == 2 and check["hit_at_2"] == 1.0 and check["passed"]


def with_questions(root: Path, asked: list[dict[str, str]]) -> FactoryConfig:
    project(root)
    raw = yaml.safe_load((root / "factory.yaml").read_text())
    raw["corpora"]["notes"]["questions"] = "questions.jsonl"
    (root / "factory.yaml").write_text(yaml.safe_dump(raw))
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in asked))
    return load_config(root / "factory.yaml")


def test_a_deleted_document_is_never_retrieved_after_the_run_that_saw_it_go(
        tmp_path: Path) -> None:
    """The story of #36: a question names the document the user deletes. The run still applies
    the delete (and the add); the question is the check's finding, a warning, not a failure."""
    config = with_questions(tmp_path, [
        {"question": "Who is the harbour master?", "source": "harbour.txt"},
        {"question": "Who keeps the orchard?", "source": "orchard.html"}])
    first = reindex(config)
    assert first["index/notes:retrieval_quality"]["passed"]
    assert "docs/orchard.html" in sources(config, "Who keeps the orchard? Antonovka apples")

    (tmp_path / "docs" / "orchard.html").unlink()
    (tmp_path / "docs" / "vineyard.txt").write_text(
        "Hill Gate Vineyard bottled 12,000 bottles of Solaris. The winemaker is Toomas Ilves.")
    second = reindex(config)
    assert (second["index/notes"]["documents_added"],
            second["index/notes"]["documents_deleted"]) == (1, 1)
    assert all(s != "docs/orchard.html" for s in sources(
        config, "Sunny Slope Orchard harvested 800 crates of Antonovka apples. Liis Kask"))
    assert sources(config, "Who is the winemaker?")[0] == "docs/vineyard.txt"
    check = second["index/notes:retrieval_quality"]
    assert not check["passed"] and check["severity"] == dg.AssetCheckSeverity.WARN
    (finding,) = check["question_findings"]
    assert (finding["line"], finding["finding"], finding["source"]) == (
        2, "missing_document", "orchard.html")
    assert "'orchard.html'" in check["description"] and check["hit_at_2"] == 1.0


def test_new_chunking_rebuilds_every_chunk_of_unchanged_documents(tmp_path: Path) -> None:
    """The docstore's hashes see only the documents: a new chunk_size must still re-chunk
    every document (it once reported success with the old chunks), and says so."""
    config = project(tmp_path)
    first = reindex(config)["index/notes"]
    raw = yaml.safe_load((tmp_path / "factory.yaml").read_text())
    raw["corpora"]["notes"] |= {"chunk_size": 32, "chunk_overlap": 0}
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "factory.yaml")
    second = reindex(config)["index/notes"]
    assert second["rebuilt_because"] == "chunk_size 64 -> 32; chunk_overlap 8 -> 0"
    # every chunk made anew, none left from the old chunking
    assert second["chunks_embedded_this_run"] == second["chunks_in_collection"] >= 3
    assert second["documents_added"] == 3 and first["chunks_embedded_this_run"] >= 3
    assert (second["chunk_size"], second["chunk_overlap"]) == (32, 0)
    assert sources(config, "Who is the harbour master?")[0] == "docs/harbour.txt"
    again = reindex(config)["index/notes"]
    assert again["chunks_embedded_this_run"] == 0 and again["rebuilt_because"] == (
        "nothing changed")


def test_a_collection_converges_even_when_the_docstore_was_lost(tmp_path: Path) -> None:
    """The docstore lives on the control plane's disk, the collection in Chroma: a new machine
    (or a cleaned work dir) must not leave chunks of documents deleted meanwhile."""
    config = project(tmp_path)
    reindex(config)
    shutil.rmtree(tmp_path / "work" / "indexes")
    (tmp_path / "docs" / "bakery.md").unlink()
    meta = reindex(config)["index/notes"]
    assert meta["stale_chunks_swept"] >= 1 and meta["documents_in_collection"] == 2
    collection = resources_for(config)["chroma"].client().get_collection("notes")
    stored = {m["source"] for m in collection.get(include=["metadatas"])["metadatas"]}
    assert stored == {"docs/harbour.txt", "docs/orchard.html"}


def test_a_blocking_retrieval_check_fails_the_run(tmp_path: Path) -> None:
    config = with_questions(tmp_path, [{"question": "Who is the harbour master?",
                                        "source": "nowhere.txt"}])
    raw = yaml.safe_load((tmp_path / "factory.yaml").read_text())
    raw["corpora"]["notes"]["retrieval_check"] = {"blocking": True}
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "factory.yaml")
    result = run_assets(make_definitions(config), "corpus/notes", "index/notes",
                        raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert not result.success  # the index itself was still applied:
    assert sources(config, "Who is the harbour master?")[0] == "docs/harbour.txt"


@pytest.mark.slow
def test_a_reader_in_another_process_sees_a_re_index(tmp_path: Path) -> None:
    """The gateway's situation with the embedded store: it keeps answering while a Dagster run
    (another process) re-indexes. Chroma alone would keep returning the deleted document's
    chunk from this process's memory; the writer's stamp makes the reader reopen."""
    config = project(tmp_path)
    reindex(config)
    assert "docs/orchard.html" in sources(config, "Who keeps the orchard? Liis Kask")
    (tmp_path / "docs" / "orchard.html").unlink()
    subprocess.run([str(Path(sys.executable).with_name("factory")), "materialize", "--config",
                    str(tmp_path / "factory.yaml"), "--select", "index/notes"], check=True,
                   cwd=tmp_path, capture_output=True,
                   env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")})
    found = sources(config, "Who keeps the orchard? Sunny Slope Orchard, Liis Kask")
    assert "docs/orchard.html" not in found and None not in found
