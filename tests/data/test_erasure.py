"""`factory forget`: an erased document is gone from every collection and every stored corpus
version, stays out when the graph runs again, and the ledger audits it without its content;
an erased record leaves a new dataset version, and the adapters trained on it are listed,
marked and (policy `retrain`) retrained through the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from assets.corpora import documents_named
from config.loading import load_config
from erasure.ledger import Ledger, RecordRules, record_hash, sha256, without_erased
from ingest.sources import RawRecord
from pipelines.cli import main
from pipelines.forget import transcripts_of
from pipelines.graph import resources_for
from pipelines.scaffold import ticket_rows
from resources.object_store import ObjectStore
from resources.retrieval import open_index, retrieve
from store.keys import transcript_key
from tests.support.documents import DOCS

BAKER = "Marek Tamm"


def run(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_rules_leave_out_exact_records_and_field_values_only() -> None:
    rules = RecordRules(frozenset({record_hash({"text": "a", "n": 1})}),
                        frozenset({("customer_id", sha256("C-1"))}))
    items = [RawRecord("t.jsonl", 1, {"n": 1, "text": "a"}),  # same record, keys reordered
             RawRecord("t.jsonl", 2, {"text": "b", "customer_id": "C-1"}),
             RawRecord("t.jsonl", 3, {"text": "c", "customer_id": "C-10"}),
             RawRecord("t.jsonl", 4, {"text": "C-1"})]  # the value, but not in the field
    erased: list[str] = []
    assert [i.row for i in without_erased(items, rules, erased)] == [3, 4]
    assert erased == ["t.jsonl:1", "t.jsonl:2"]


def test_a_document_is_named_by_its_id_or_its_path_inside_the_source() -> None:
    ids = ["docs/a.txt", "docs/sub/a.txt", "archive/b.txt"]
    assert documents_named("docs/a.txt", ids) == ["docs/a.txt"]
    assert documents_named("b.txt", ids) == ["archive/b.txt"]
    assert documents_named("a.txt", ids) == ["docs/a.txt", "docs/sub/a.txt"]  # refused later
    assert documents_named("c.txt", ids) == []


def test_a_rule_for_future_rows_runs_nothing_now(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No stored version holds the customer: the rule is recorded and nothing is run (an empty
    selection must not become the whole graph)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "data.jsonl").write_text(json.dumps(
        {"prompt": "hi", "completion": "hello", "customer_id": "C-1"}) + "\n")
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "datasets": {"d": {"sources": [{"path": "data.jsonl"}]}}}))
    out = run("forget", "--config", str(tmp_path / "factory.yaml"), "--dataset", "d",
              "--where", "customer_id=C-9").output
    assert "forgot: 0 record(s) of dataset d" in out and "ran: nothing" in out
    store = resources_for(load_config(tmp_path / "factory.yaml"))["store"]
    assert not store.exists("refs/dataset/d.json")  # nothing was materialized
    (entry,) = Ledger.read(store).entries
    assert entry["state"] == "done" and entry["subject"]["value_sha256"] == sha256("C-9")


@pytest.fixture
def corpora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two corpora that both hold the bakery's document, and pretraining text read from one."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    for folder in ("docs", "archive"):
        (tmp_path / folder).mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / name).write_text(text)
    shutil.copy(tmp_path / "docs" / "bakery.md", tmp_path / "archive" / "bakery-2024.md")
    (tmp_path / "archive" / "harbour.txt").write_text(DOCS["harbour.txt"])
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "corpora": {name: {"source": {"path": name}, "chunk_size": 64, "chunk_overlap": 8}
                    for name in ("docs", "archive")},
        "base_models": {"tiny": {  # a tokenizer for the text (nothing trains on it)
            "source": "local", "architecture": {
                "hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128,
                "vocab_size": 512, "max_position_embeddings": 256},
            "pretrain": {"steps": 2, "micro_batch_size": 4, "sequence_len": 64,
                         "corpus_documents": 5, "arithmetic_lines": 40}}},
        "datasets": {"notes": {"kind": "pretrain", "sources": [{"corpus": "docs"}],
                               "base_model": "tiny", "block_size": 16,
                               "split": {"val": 0.1, "test": 0.3},
                               "quality": {"min_test": 0}}}}))
    run("materialize", "--config", str(tmp_path / "factory.yaml"))
    return tmp_path


def stored_sources(root: Path, corpus: str) -> set[str]:
    config = load_config(root / "factory.yaml")
    chunks = resources_for(config)["chroma"].client().get_collection(corpus)
    return {m["source"] for m in chunks.get(include=["metadatas"])["metadatas"]}


@pytest.mark.slow
def test_an_erased_document_is_gone_from_every_collection_and_stays_out(corpora: Path) -> None:
    path = str(corpora / "factory.yaml")
    config = load_config(path)
    store = resources_for(config)["store"]
    before = {c: store.read_ref(f"corpus/{c}")["version"] for c in ("docs", "archive")}
    notes = store.read_ref("dataset/notes")["version"]
    assert store.manifest(f"dataset/notes/{notes}")["corpora"] == {"docs": before["docs"]}
    dry = run("forget", "--config", path, "--document", "bakery.md", "--dry-run").output
    assert "dry run" in dry and "docs/bakery.md" in dry
    assert "docs/bakery.md" in stored_sources(corpora, "docs")  # a dry run changes nothing

    # the archive's copy has another name but the same text: erased by content too
    out = run("forget", "--config", path, "--document", "docs/bakery.md").output
    assert "forgot: 2 document(s): archive/bakery-2024.md, docs/bakery.md" in out
    assert "no adapter learnt from it" in out
    assert f"purged corpus/docs/{before['docs']}" in out
    assert f"dataset notes: held by version(s) {notes}" in out  # read from corpus/docs
    assert f"purged dataset/notes/{notes}" in out
    assert stored_sources(corpora, "docs") == {"docs/harbour.txt", "docs/orchard.html"}
    assert stored_sources(corpora, "archive") == {"archive/harbour.txt"}
    for corpus in ("docs", "archive"):
        index = open_index(resources_for(config)["chroma"].client(), corpus)
        assert all(BAKER not in r["text"] for r in retrieve(index, "Who is the head baker?", 5))
        assert not store.is_complete(f"corpus/{corpus}/{before[corpus]}")  # purged
    for folder in ("store", "work/runs", "work/indexes"):  # no stored copy, no run's copy
        assert not [p for p in (corpora / folder).rglob("*")
                    if p.is_file() and BAKER in p.read_text(errors="ignore")], folder

    # the file is still in the folder: the next run leaves it out again
    again = run("materialize", "--config", path)
    assert "failed" not in again.output.lower()
    assert stored_sources(corpora, "docs") == {"docs/harbour.txt", "docs/orchard.html"}
    (entry,) = Ledger.read(store).entries
    assert entry["state"] == "done" and entry["who"] and entry["subject"]["kind"] == "document"
    assert set(entry["materialize"]) == {"corpus/docs", "index/docs", "corpus/archive",
                                         "index/archive", "dataset/notes"}
    assert BAKER not in json.dumps(entry) and "Blue Oven" not in json.dumps(entry)


@pytest.mark.slow
def test_forget_refuses_what_it_cannot_find_and_changes_nothing(corpora: Path) -> None:
    path = str(corpora / "factory.yaml")
    missing = CliRunner().invoke(main, ["forget", "--config", path, "--document", "nope.txt"])
    assert missing.exit_code != 0 and "no stored corpus holds a document named 'nope.txt'" \
        in missing.output
    both = CliRunner().invoke(main, ["forget", "--config", path, "--document", "a",
                                     "--dataset", "b"])
    assert both.exit_code != 0 and "name one thing to forget" in both.output
    # two corpora each hold a harbour.txt with that path inside their source
    ambiguous = CliRunner().invoke(main, ["forget", "--config", path, "--document",
                                          "harbour.txt"])
    assert ambiguous.exit_code != 0 and "'harbour.txt' names 2 documents: " \
        "archive/harbour.txt, docs/harbour.txt; name one by its full id" in ambiguous.output
    store = resources_for(load_config(path))["store"]
    assert not Ledger.read(store).entries


def ticket_of(row: dict[str, Any], customer: str) -> dict[str, Any]:
    """A ticket that names its customer's account, with the id as a field too."""
    *head, user, reply = row["messages"]
    user = {**user, "content": f"{user['content']} Account {customer}."}
    return {"messages": [*head, user, reply], "customer_id": customer}


def ticket_project(root: Path) -> Path:
    """Support tickets with a customer id on the tiny model: a dataset, an adapter, its gate."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "tickets.jsonl").write_text("".join(
        json.dumps(ticket_of(r, f"C-{i % 40:03d}")) + "\n"
        for i, r in enumerate(ticket_rows(160, seed=3))))
    small = yaml.safe_load((Path(__file__).parents[1] / "configs" / "small.yaml").read_text())
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"tiny": small["base_models"]["tiny"]},
        "datasets": {"tickets": {"sources": [{"path": "data/tickets.jsonl"}],
                                 "base_model": "tiny", "split": {"val": 0.1, "test": 0.1}}},
        "adapters": {"triage": {"base_model": "tiny", "dataset": "tickets",
                                "lora": {"r": 8, "alpha": 16},
                                "training": {"max_steps": 8, "micro_batch_size": 8,
                                             "sequence_len": 256}}},
        "evaluations": {"triage-eval": {"adapter": "triage", "answer_pattern":
                                        "Category: (\\w+)", "limit": 8,
                                        "max_new_tokens": 12,
                                        "promotion": {"margin": -1.0}}},
        "erasure": "retrain"}))
    return root / "factory.yaml"


def dataset_texts(store: Any) -> list[str]:
    """Every message of the current tickets version's rows, split by split, in order."""
    root = store.local_dir(store.read_ref("dataset/tickets")["prefix"])
    return [m["content"] for split in ("train", "val", "test")
            for line in (root / f"{split}.jsonl").read_text().splitlines()
            for m in json.loads(line)["messages"]]


@pytest.mark.slow
def test_forgetting_a_customer_retrains_what_learnt_from_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    path = str(ticket_project(tmp_path))
    run("materialize", "--config", path)
    config = load_config(path)
    store = resources_for(config)["store"]
    old_data = store.read_ref("dataset/tickets")["version"]
    before = dataset_texts(store)
    assert any("Account C-007." in t for t in before)
    old_adapter = store.read_ref("adapter/triage")["version"]
    assert store.get_json("registry/triage.json")["champion"]["version"] == old_adapter

    out = run("forget", "--config", path, "--dataset", "tickets", "--where",
              "customer_id=C-007", "--who", "dpo@example.com").output
    assert "forgot: 4 record(s) of dataset tickets (data/tickets.jsonl:8," in out
    assert f"dataset tickets: held by version(s) {old_data}" in out
    assert f"adapter triage: trained on erased data in {old_adapter}" in out
    assert "retrained triage: champion" in out

    new_data = store.read_ref("dataset/tickets")
    assert new_data["version"] != old_data and not store.is_complete(f"dataset/tickets/{old_data}")
    after = dataset_texts(store)
    assert not any("Account C-007." in t for t in after)
    # nothing else is lost (a near-duplicate the erased rows had shadowed may now be kept)
    assert {t for t in before if "Account C-007." not in t} <= set(after)

    registry = store.get_json("registry/triage.json")
    (mark,) = registry["erased"][old_adapter]
    retrained = store.read_ref("adapter/triage")
    assert retrained["version"] != old_adapter
    assert retrained["dataset"] == f"tickets@{new_data['version']}"
    assert registry["champion"]["version"] == retrained["version"]  # through the gate
    card = (store.local_dir(f"adapter/triage/{old_adapter}") / "README.md").read_text()
    assert f"**Trained on erased data** ({mark})" in card
    listing = run("adapters", "--config", path).output
    assert f"{old_adapter}" in listing and "TRAINED-ON-ERASED-DATA" in listing
    (entry,) = Ledger.read(store).entries
    assert entry["who"] == "dpo@example.com" and entry["id"] == mark
    assert "C-007" not in json.dumps(entry)  # the value is kept as a hash only
    assert {"dataset/tickets", "adapter/triage", "evaluation/triage-eval",
            "promotion/triage"} <= set(entry["materialize"])

    # the customer's next ticket stays out too
    with (tmp_path / "data" / "tickets.jsonl").open("a") as f:
        f.write(json.dumps(ticket_of(ticket_rows(1, seed=9)[0], "C-007")) + "\n")
    run("materialize", "--config", path, "--select", "dataset/tickets")
    assert store.read_ref("dataset/tickets")["version"] == new_data["version"]

    # policy unpublish: the champion learnt from customer C-008 too, so it stops being served
    raw = yaml.safe_load(Path(path).read_text())
    Path(path).write_text(yaml.safe_dump({**raw, "erasure": "unpublish"}))
    out = run("forget", "--config", path, "--dataset", "tickets", "--where",
              "customer_id=C-008").output
    assert "unpublished triage" in out and "retrained" not in out
    registry = store.get_json("registry/triage.json")
    assert registry["champion"] is None and registry["history"][-1]["event"] == "unpublished"
    assert set(registry["erased"]) == {old_adapter, retrained["version"]}


def test_a_forgotten_recordings_stored_transcripts_are_found_by_name_or_by_text(
        tmp_path: Path) -> None:
    """The transcript a corpus keeps to skip an unchanged recording holds what was said: an
    erasure of the recording (by name, or of a copy by its text) takes it too."""
    store = ObjectStore(url=f"file://{tmp_path / 'store'}", root=str(tmp_path))
    said = "[00:00:00] Marek Tamm bakes the rye bread."
    for sha, file, document in (("a" * 64, "calls/bakery.wav", said),
                                ("b" * 64, "archive/copy.wav", said),
                                ("c" * 64, "calls/harbour.wav", "[00:00:00] Ships at dawn.")):
        store.put_json(transcript_key("whisper", "v" * 16, sha),
                       {"file": file, "document": document})
    found = transcripts_of(store, {"calls/bakery.wav"}, {sha256(said)})
    assert sorted(found) == [transcript_key("whisper", "v" * 16, s) for s in ("a" * 64, "b" * 64)]
