"""Every supported input format reads and normalises; every broken input is explained."""

import json
from collections import Counter
from pathlib import Path

import pytest

from assets.common import publish
from config.datasets import CorpusDatasetSource, DatasetSpec, FileSource, HFSource
from curation.pipeline import curate
from erasure.ledger import sha256
from ingest import published_corpus
from ingest.documents import extract_text
from ingest.problems import InputFileError, Rejection
from ingest.sources import RawRecord, StoredCorpora, read_file, read_source
from resources.object_store import ObjectStore
from tests.support import gallery


def spec(**overrides: object) -> DatasetSpec:
    return DatasetSpec.model_validate({"sources": [{"path": "data"}], **overrides})


def test_every_format_normalises_to_chat(tmp_path: Path) -> None:
    gallery.write_good(tmp_path / "data")
    items = list(read_source(FileSource(path="data"), tmp_path, tmp_path / "s", None))
    assert all(isinstance(i, RawRecord) for i in items)
    curated = curate(items, spec(dedupe={"near": False}), None, None)
    assert curated.rejections == []
    rows = [r["messages"] for split in curated.splits.values() for r in split]
    assert len(rows) == 8
    by_user = {m[-2]["content"]: m for m in rows}
    assert by_user["Subtract.\n\n9 minus 4"][-1] == {"role": "assistant",
                                                    "content": "9 - 4 = 5. #### 5"}
    assert by_user["Say hi to Ada."][-1]["content"] == "Hi Ada!"  # ShareGPT from/value
    assert by_user["Hello, who?"][-1]["content"] == "It is me."  # CSV with a quoted comma
    assert by_user["Parquet question two"][-1]["content"] == "Answer two"
    assert rows[[m[-2]["content"] for m in rows].index("Capital of France?")][0]["role"] \
        == "system"


def test_broken_rows_are_quarantined_with_exact_reasons(tmp_path: Path) -> None:
    path = gallery.write_broken_rows(tmp_path)
    curated = curate(list(read_file(path, "broken.jsonl")), spec(pii={"scrub": True}), None,
                     None)
    got = {(r.row, r.reason, r.field) for r in curated.rejections}
    assert got == {
        (2, "missing_field", "output"),
        (3, "wrong_type", "messages"),
        (4, "empty_messages", "messages"),
        (5, "duplicate", None),
        (7, "invalid_json", None),
        (8, "bad_role", "messages[1].role"),
        (9, "no_assistant_turn", "messages"),
        (10, "wrong_type", "output"),  # numbers are accepted as text; a list is not
        (11, "not_an_object", None),
        (12, "unknown_format", None),
        (13, "invalid_utf8", None),
    }
    assert all(r.file == "broken.jsonl" and r.fix for r in curated.rejections)
    kept = sum(len(s) for s in curated.splits.values())
    assert kept + len(curated.rejections) == 13  # nothing lost: kept or quarantined
    duplicate = next(r for r in curated.rejections if r.reason == "duplicate")
    assert "broken.jsonl:1" in duplicate.detail
    # 10 of 13 rows are bad input; the duplicate is a curation decision, not counted
    assert curated.invalid_fraction == pytest.approx(10 / 13)


def test_pii_scrubbed_and_counted_per_kind(tmp_path: Path) -> None:
    path = gallery.write_broken_rows(tmp_path)
    curated = curate(list(read_file(path, "broken.jsonl")), spec(pii={"scrub": True}), None,
                     None)
    assert curated.pii_counts == Counter(email=1, phone=1, ssn=1, card=1)
    texts = [m["content"] for s in curated.splits.values() for r in s for m in r["messages"]]
    pii_row = next(t for t in texts if t.startswith("Mail"))
    assert pii_row == "Mail [EMAIL] or call [PHONE]; SSN [SSN]; card [CARD]."


def test_card_numbers_need_luhn_and_scrub_is_opt_in(tmp_path: Path) -> None:
    from curation.pii import scrub

    text, counts = scrub("order 4111 1111 1111 1112 and card 5500 0000 0000 0004")
    assert text == "order 4111 1111 1111 1112 and card [CARD]"
    assert counts == Counter(card=1)
    path = gallery.write_broken_rows(tmp_path)
    curated = curate(list(read_file(path, "broken.jsonl")), spec(), None, None)
    assert not curated.pii_counts


FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


@pytest.mark.parametrize(("text", "scrubbed"), [
    ("ring 12 345 678 today", "ring [PHONE] today"),  # the fewest digits a phone has
    ("Kartennummer 5500 0000 0000 0004 \u2013 danke", "Kartennummer [CARD] \u2013 danke"),
    ("電話 555-123-4567、SSN 123-45-6789", "電話 [PHONE]、SSN [SSN]"),
    ("card " + "5500 0000 0000 0004".translate(FULL_WIDTH), "card [CARD]"),  # \d matches these
])
def test_pii_found_whatever_the_script_and_however_few_digits(text: str, scrubbed: str) -> None:
    """The scrubber skips a pattern when a text holds fewer digits than any match has; that
    shortcut must never skip a real hit, in ASCII text or any other."""
    from curation.pii import scrub

    assert scrub(text)[0] == scrubbed


def test_duplicate_words_are_the_regex_words_in_ascii_and_beyond() -> None:
    """ASCII text takes a translate-and-split shortcut to the words `\\w+` finds."""
    import random
    import re

    from curation.dedupe import words_of

    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + list("éßΣ字٣_")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
             for _ in range(5000)]
    assert [words_of(t) for t in texts] == [re.findall(r"\w+", t.lower()) for t in texts]
    assert words_of("Ünïcode: Straße—ok?") == ["ünïcode", "straße", "ok"]


@pytest.mark.parametrize(("kind", "message"), [
    ("binary", "model.jsonl: binary content, not JSONL text"),
    ("empty", "empty.jsonl: the file is empty"),
    ("truncated", "cut.parquet: not a readable Parquet file"),
    ("utf16", "utf16.csv: the file is UTF-16 encoded. Fix: re-save it as UTF-8"),
    ("bad_json", "array.json: not valid JSON: Expecting value at line 2 column 13"),
])
def test_file_that_is_not_what_it_claims_fails_clearly(tmp_path: Path, kind: str,
                                                       message: str) -> None:
    path = gallery.write_broken_files(tmp_path)[kind]
    with pytest.raises(InputFileError) as exc:
        list(read_file(path, path.name))
    assert str(exc.value).startswith(message)
    assert "Fix:" in str(exc.value)


def test_documents_become_clean_text_and_a_corrupt_pdf_is_quarantined(tmp_path: Path) -> None:
    gallery.write_documents(tmp_path)
    texts = {p.name: extract_text(p, p.name) for p in sorted(tmp_path.iterdir())}
    assert texts["report.pdf"] == "Kestrel Energy annual revenue rose."
    assert texts["minutes.docx"] == "Juniper Robotics board minutes."
    assert texts["page.html"] == "Halcyon Foods grew 12%."  # no script, style or nav
    assert texts["notes.txt"].endswith("\n\nSecond paragraph.")
    corrupt = texts["corrupt.pdf"]
    assert isinstance(corrupt, Rejection)
    assert (corrupt.file, corrupt.reason) == ("corrupt.pdf", "unreadable_document")


def test_near_duplicates_removed_with_a_pointer_to_the_kept_row() -> None:
    base = ("The quarterly report shows revenue of 12 million dollars, up from 10 million, "
            "driven by strong sales in the northern region and lower costs.")
    rows = [RawRecord("a.jsonl", 1, {"prompt": "Summarise", "completion": base}),
            RawRecord("a.jsonl", 2, {"prompt": "Summarise", "completion": base + " Indeed."}),
            RawRecord("a.jsonl", 3, {"prompt": "Something else entirely",
                                     "completion": "A different answer about cats."})]
    curated = curate(rows, spec(dedupe={"near": True, "threshold": 0.8}), None, None)
    assert [(r.row, r.reason) for r in curated.rejections] == [(2, "near_duplicate")]
    assert "a.jsonl:1" in curated.rejections[0].detail


def test_preference_triples(tmp_path: Path) -> None:
    rows = [RawRecord("p.jsonl", i + 1, r) for i, r in enumerate(gallery.PREFERENCES)]
    curated = curate(rows, spec(kind="preference"), None, None)
    kept = [r for s in curated.splits.values() for r in s]
    assert {r["chosen"] for r in kept} == {"Yes, on a clear day.", "4"}
    assert all(r["messages"][-1]["role"] == "user" for r in kept)
    assert [(r.row, r.reason) for r in curated.rejections] == [(3, "identical_pair")]


def test_field_map_for_custom_columns() -> None:
    rows = [RawRecord("c.csv", 2, {"question": "Q?", "answer": "A."})]
    assert curate(rows, spec(), None, None).rejections[0].reason == "unknown_format"
    curated = curate(rows, spec(field_map={"prompt": "question", "completion": "answer"}),
                     None, None)
    kept = [r for s in curated.splits.values() for r in s]
    assert kept == [{"messages": [{"role": "user", "content": "Q?"},
                                  {"role": "assistant", "content": "A."}]}]


def test_local_hugging_face_dataset_goes_through_datasets(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(gallery.GOOD_ALPACA).save_to_disk(str(tmp_path / "hfdata"))
    items = list(read_source(HFSource(hf="hfdata"), tmp_path, tmp_path / "s", None))
    assert [(i.file, i.row) for i in items] == [("hf:hfdata[train]", 1), ("hf:hfdata[train]", 2)]
    assert curate(items, spec(), None, None).rejections == []


def test_s3_prefix_source(tmp_path: Path, s3_endpoint: str, s3_env: None) -> None:
    import boto3

    from config.datasets import S3Source

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="raw-data")
    gallery.write_good(tmp_path / "data")
    for name in ("alpaca.jsonl", "pc.csv"):
        client.upload_file(str(tmp_path / "data" / name), "raw-data", f"chats/{name}")
    items = list(read_source(S3Source(s3="s3://raw-data/chats/"), tmp_path, tmp_path / "st",
                             s3_endpoint))
    assert {(i.file, i.row) for i in items} == {
        ("s3://raw-data/chats/alpaca.jsonl", 1), ("s3://raw-data/chats/alpaca.jsonl", 2),
        ("s3://raw-data/chats/pc.csv", 2), ("s3://raw-data/chats/pc.csv", 3)}


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nope/\*\.jsonl: no files match"):
        list(read_source(FileSource(path="nope/*.jsonl"), tmp_path, tmp_path, None))


def test_documents_pack_into_token_blocks_for_continued_pretraining(tmp_path: Path) -> None:
    from curation.tokens import TokenCounter
    from resources.embeddings import BUNDLED, model_path

    gallery.write_documents(tmp_path / "data")
    (tmp_path / "data" / "long.txt").write_text(" ".join(f"word{i}" for i in range(400)))
    items = list(read_source(FileSource(path="data"), tmp_path, tmp_path / "s", None))
    counter = TokenCounter(model_path(BUNDLED))
    pretrain = spec(kind="pretrain", base_model="tiny", block_size=32,
                    split={"val": 0.0, "test": 0.2, "seed": 0})
    curated = curate(items, pretrain, counter, None)
    assert [(r.file, r.reason) for r in curated.rejections] == [
        ("data/corrupt.pdf", "unreadable_document")]
    blocks = [b["text"] for s in curated.splits.values() for b in s]
    lengths = [len(counter.tokenizer(b, add_special_tokens=False)["input_ids"]) for b in blocks]
    assert len(blocks) > 10
    assert max(lengths) <= 40  # decoded blocks re-tokenise to about block_size
    assert any("kestrel energy" in b.lower() for b in blocks)


@pytest.mark.parametrize("key", ["chats/../../../../escaped.jsonl", "/etc/escaped.jsonl"])
def test_s3_keys_that_would_leave_the_staging_folder_are_refused(
        tmp_path: Path, s3_endpoint: str, s3_env: None, key: str) -> None:
    import boto3

    from config.datasets import S3Source

    bucket = f"hostile-{abs(hash(key)) % 10**8}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=key, Body=b'{"prompt": "a", "completion": "b"}\n')
    assert client.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"] == key
    staging = tmp_path / "work" / "st"
    with pytest.raises(InputFileError, match=r"escaped\.jsonl") as error:
        list(read_source(S3Source(s3=f"s3://{bucket}/"), tmp_path, staging, s3_endpoint))
    assert f"s3://{bucket}/{key}" in str(error.value) and "Fix:" in str(error.value)
    assert not [p for p in Path("/").glob("*escaped.jsonl")]
    assert not list(tmp_path.rglob("escaped.jsonl"))


def test_a_corpus_source_reads_its_stored_documents_and_a_recording_as_said(
        tmp_path: Path) -> None:
    """A stored corpus version (a memo and a transcribed call): one text record per document,
    the call's timestamps left out, each named by corpus and document."""
    published = tmp_path / "published"
    (published / "docs").mkdir(parents=True)
    (published / "docs" / "memo.txt").write_text("Refunds take five working days.")
    (published / "docs" / "call.txt").write_text(
        "[00:00:00] The lamp room is repainted\n[00:00:04] every May.")
    (published / published_corpus.LISTING).write_text("".join(json.dumps(d) + "\n" for d in [
        {"doc_id": "docs/memo.md", "file": "docs/memo.txt", "sha256": "m" * 64},
        {"doc_id": "calls/keeper.wav", "file": "docs/call.txt", "sha256": "c" * 64}]))
    store = ObjectStore(url=f"file://{tmp_path / 'store'}", root=str(tmp_path))
    publish(store, "corpus", "notes", "v1", published)
    corpora = StoredCorpora(store)
    items = list(read_source(CorpusDatasetSource(corpus="notes"), tmp_path, tmp_path / "s",
                             None, corpora))
    assert items == [
        RawRecord("corpus:notes/docs/memo.md", 1, {"text": "Refunds take five working days."}),
        RawRecord("corpus:notes/calls/keeper.wav", 1,
                  {"text": "The lamp room is repainted every May."})]
    assert corpora.read == {"notes": "v1"}  # the dataset's lineage
    # forgotten since this version was stored (`factory forget`): left out, by id or by text
    for forgotten in (sha256("calls/keeper.wav"), "c" * 64):
        kept = list(read_source(CorpusDatasetSource(corpus="notes"), tmp_path, tmp_path / "s",
                                None, StoredCorpora(store, frozenset({forgotten}))))
        assert [i.file for i in kept] == ["corpus:notes/docs/memo.md"]  # type: ignore[union-attr]
