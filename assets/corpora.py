"""Document corpora: a folder, an S3 prefix or the demo generator, parsed to clean text.

A document that cannot be parsed goes to `quarantine.jsonl` with its file and reason; the rest
is published. Each document keeps its source path (or s3:// URL) as its id and a content hash,
which is what the index compares to embed only what changed.
"""


import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import Definition, publish, store_link
from assets.deployments import published
from assets.watched import corpus_is_watched, watched_key
from config.corpora import CorpusSpec, GeneratedCorpus
from config.datasets import FileSource
from config.schema import FactoryConfig
from erasure.ledger import Ledger, sha256
from ingest import published_corpus
from ingest.demo_data import filings
from ingest.documents import DOCUMENTS, extract_text
from ingest.listings import corpus_suffixes, listing_metadata, watched_listings
from ingest.problems import Rejection
from ingest.sources import local_files, s3_files
from models.sources import content_hash
from resources.object_store import ObjectStore
from resources.speech_client import (
    AUDIO_SUFFIXES,
    TranscriptionFailed,
    timestamped,
    transcribe,
)
from store.keys import transcript_key


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


Transcriber = Callable[[Path, str], "Document | Rejection"]


def read_documents(spec: CorpusSpec, root: Path, staging: Path, s3_endpoint_url: str | None,
                   transcriber: Transcriber | None = None) -> Iterator[Document | Rejection]:
    source = spec.source
    if isinstance(source, GeneratedCorpus):
        for filing in filings.generate(source.documents, source.seed):
            yield Document(filing.doc_id, filing.text)
        return
    if isinstance(source, FileSource):
        files = [(p, str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
                 for p in local_files(source.path, root)]
    else:
        files = s3_files(source.s3, staging, s3_endpoint_url)
    for path, name in files:
        if path.name.startswith("."):
            continue
        if path.suffix.lower() in AUDIO_SUFFIXES:
            yield transcriber(path, name) if transcriber else Rejection(
                name, 1, "recording_without_speech_model", None,
                "a recording, and this corpus names no speech deployment",
                "set corpora.<name>.transcribe to a deployment of a speech model")
            continue
        if path.suffix.lower() not in DOCUMENTS:
            yield Rejection(name, 1, "unsupported_document", None,
                            f"{path.suffix!r} is not a document type",
                            f"use {', '.join(sorted(DOCUMENTS))}")
            continue
        text = extract_text(path, name)
        yield text if isinstance(text, Rejection) else Document(name, text)


def transcriber_for(spec: CorpusSpec, config: FactoryConfig, store: ObjectStore,
                    log: Any, counts: dict[str, int]) -> Transcriber | None:
    """Recordings become timestamped transcripts by the corpus's speech deployment, each kept
    in the store by the recording's content and the model's version: a changed recording is
    transcribed again, alone; the others are read back."""
    if spec.transcribe is None:
        return None
    deployed = published(store, spec.transcribe)
    if deployed is None:
        raise dg.Failure(f"corpora: deployment {spec.transcribe} transcribes this corpus's "
                         f"recordings and is not serving; materialize deployment/"
                         f"{spec.transcribe}")
    url, model = deployed["replicas"][0]["url"], deployed["base_model"]
    version = deployed["base_version"]

    def transcribed(path: Path, name: str) -> Document | Rejection:
        key = transcript_key(model, version, content_hash(path))
        if store.exists(key):
            counts["reused"] += 1
            return Document(name, store.get_json(key)["document"])
        try:
            result = transcribe(url, model, path, api_key=config.gateway.upstream_api_key)
        except TranscriptionFailed as exc:
            return Rejection(name, 1, "untranscribable_recording", None, str(exc)[:300],
                             "check that the file plays (wav, flac, mp3, ogg, webm, m4a)")
        document = timestamped(result)
        if not document:
            return Rejection(name, 1, "no_speech", None, f"{model} heard no speech in it",
                             "remove the file or check its sound")
        store.put_json(key, {"file": name, "model": f"{model}@{version}",
                             "duration": result.get("duration"), "document": document,
                             "segments": result.get("segments")})
        counts["transcribed"] += 1
        log.info(f"transcribed {name} ({result.get('duration') or 0:.0f} s)")
        return Document(name, document)

    return transcribed


def generated_questions(spec: CorpusSpec) -> list[dict[str, str]]:
    if not isinstance(spec.source, GeneratedCorpus):
        return []
    return [{"question": q, "source": f.doc_id}
            for f in filings.generate(spec.source.documents, spec.source.seed)
            for q in f.questions]


def documents_named(name: str, doc_ids: Iterable[str]) -> list[str]:
    """The documents a person means by `name`: the one whose id it is, else every one it names
    by its path inside the corpus source (`Apache-2.0.txt` for `corpus/Apache-2.0.txt`)."""
    ids = list(dict.fromkeys(doc_ids))
    if name in ids:
        return [name]
    return [d for d in ids if d.endswith("/" + name.lstrip("/"))]


def named_questions(path: Path, doc_ids: list[str]
                    ) -> tuple[list[dict[str, str]], list[dict[str, object]]]:
    """The questions file's {question, source} pairs with each source as the corpus names the
    document, and the findings: lines that cannot be scored. A source may be named relative to
    the corpus source (`Apache-2.0.txt` for `corpus/Apache-2.0.txt`). A question naming no
    document (deleted since it was written) or several is a finding of the index's retrieval
    check, never a silent miss and never a reason to keep a deleted document indexed."""
    if not path.is_file():
        return [], [{"line": None, "finding": "no_questions_file",
                     "detail": f"{path} does not exist; write JSONL lines of "
                               '{"question": ..., "source": ...} there or remove the key'}]
    known, findings, out = set(doc_ids), [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question, source = str(row["question"]), str(row["source"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            findings.append({"line": number, "finding": "unreadable",
                             "detail": f"not a {{question, source}} object ({exc})"})
            continue
        if source not in known:
            matches = documents_named(source, doc_ids)
            if len(matches) != 1:
                findings.append({
                    "line": number, "finding": "ambiguous_source" if matches
                    else "missing_document", "source": source, "question": question,
                    "detail": f"source {source!r} " + (
                        f"names {len(matches)} documents" if matches else
                        "is no document of the corpus (deleted or renamed?); documents are "
                        f"named like {', '.join(repr(d) for d in doc_ids[:3])}")})
                continue
            source = matches[0]
        out.append({"question": question, "source": source})
    return out, findings


def corpus_asset(name: str, spec: CorpusSpec, config: FactoryConfig) -> list[Definition]:
    deps = [dg.AssetKey(["deployment", spec.transcribe])] if spec.transcribe else []
    deps += [watched_key("corpus", name)] if corpus_is_watched(spec) else []

    @dg.asset(key=["corpus", name], group_name="rag", kinds={"text"}, deps=deps,
              description=f"Parsed documents of corpus '{name}' (+ quarantine, QA pairs).")
    def _corpus(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
        out = config.work_dir / "runs" / "corpus" / name
        staging = config.work_dir / "staging" / "corpus" / name
        for folder in (out, staging):
            shutil.rmtree(folder, ignore_errors=True)
        seen = listing_metadata(watched_listings(  # before reading: a later change is news
            [spec.source], config.root, config.storage.s3_endpoint_url, corpus_suffixes(spec))) \
            if corpus_is_watched(spec) else {}
        (out / "docs").mkdir(parents=True)
        listing, rejected, erased = [], [], 0
        forgotten = Ledger.read(store).document_hashes()
        recordings = {"transcribed": 0, "reused": 0}
        transcriber = transcriber_for(spec, config, store, context.log, recordings)
        for item in read_documents(spec, config.root, staging,
                                   config.storage.s3_endpoint_url, transcriber):
            if isinstance(item, Rejection):
                context.log.warning(f"quarantined {item.file}: {item.detail}")
                rejected.append(item.to_json())
                continue
            digest = sha256(item.text)
            if published_corpus.is_forgotten(item.doc_id, digest, forgotten):
                context.log.info(f"left out {item.doc_id}: erased (`factory forget`)")
                erased += 1
                continue
            (out / "docs" / f"{digest[:24]}.txt").write_text(item.text)
            listing.append({"doc_id": item.doc_id, "file": f"docs/{digest[:24]}.txt",
                            "sha256": digest, "chars": len(item.text)})
        if not listing and not erased:  # emptied by `factory forget`: the index must follow
            raise dg.Failure(f"corpus {name}: no readable documents "
                             f"({len(rejected)} quarantined); see the log for each file")
        questions, findings = generated_questions(spec), []
        if spec.questions:
            questions, findings = named_questions(config.root / spec.questions,
                                                  [d["doc_id"] for d in listing])
        for finding in findings:
            context.log.warning(f"corpora.{name}.questions: line {finding['line']}: "
                                f"{finding['detail']}")
        lines = {published_corpus.LISTING: listing, "quarantine.jsonl": rejected,
                 "questions.jsonl": questions, "question_findings.jsonl": findings}
        for file, rows in lines.items():
            (out / file).write_text("".join(json.dumps(r) + "\n" for r in rows))
        version = hashlib.sha256((out / published_corpus.LISTING).read_bytes()).hexdigest()[:16]
        ref = publish(store, "corpus", name, version, out, documents=len(listing))
        shutil.rmtree(staging, ignore_errors=True)
        return dg.MaterializeResult(
            metadata={"documents": len(listing), "quarantined": len(rejected),
                      **({"recordings_transcribed": recordings["transcribed"],
                          "recordings_reused": recordings["reused"]} if transcriber else {}),
                      "erased_documents_left_out": erased,
                      "characters": sum(d["chars"] for d in listing),
                      "questions": len(questions), "question_findings": len(findings),
                      "version": version,
                      "quarantine": dg.MetadataValue.json(rejected[:20]),
                      "location": store_link(store, ref["prefix"]), **seen},
            data_version=dg.DataVersion(version),
        )

    return [_corpus]
