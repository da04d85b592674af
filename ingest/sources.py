"""Declared sources -> raw records with provenance (file and row), or rejections.

Files come from a local path/glob, an S3 prefix (downloaded to a staging folder, keeping keys as
names), a Hugging Face dataset or a corpus of the project as stored (recordings transcribed);
the demo generator is one more source. Tabular files give records; documents (PDF, DOCX, HTML,
Markdown, TXT) give one {"text"} record each.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from config.datasets import (
    CorpusDatasetSource,
    DatasetSource,
    FileSource,
    GeneratedSource,
    HFSource,
    S3Source,
    TrafficSource,
)
from ingest import published_corpus
from ingest.demo_data import math_problems
from ingest.documents import DOCUMENTS, extract_text
from ingest.problems import InputFileError, Rejection
from ingest.readers import TABULAR, read_records
from resources.speech_client import AUDIO_SUFFIXES, spoken_text
from store.artifacts import ArtifactStore
from store.paths import UnsafePath, contained
from store.s3 import objects, split_url


class TrafficReader(Protocol):
    """What reads a {traffic} source (ingest/traffic.py's GatewayTraffic)."""

    def records(self, source: TrafficSource) -> Iterator[Item]: ...


@dataclass(frozen=True)
class RawRecord:
    file: str
    row: int
    data: dict[str, Any]


Item = RawRecord | Rejection


def local_files(pattern: str, root: Path) -> list[Path]:
    base = root / pattern
    if base.is_dir():
        files = sorted(p for p in base.rglob("*") if p.is_file())
    else:
        files = sorted(Path(p) for p in glob.glob(str(base), recursive=True) if Path(p).is_file())
    if not files:
        raise InputFileError(pattern, "no files match this path",
                             f"check the path (relative to {root}) or the glob")
    return files


def read_file(path: Path, name: str) -> Iterator[Item]:
    suffix = path.suffix.lower()
    if suffix in TABULAR:
        for item in read_records(path, name):
            yield item if isinstance(item, Rejection) else RawRecord(name, item[0], item[1])
    elif suffix in DOCUMENTS:
        text = extract_text(path, name)
        yield text if isinstance(text, Rejection) else RawRecord(name, 1, {"text": text})
    elif not path.name.startswith("."):
        yield Rejection(name, 0, "unsupported_file", None, f"unsupported file type {suffix!r}",
                        f"use {', '.join(sorted(TABULAR | DOCUMENTS))}")


def s3_files(url: str, staging: Path, endpoint_url: str | None) -> list[tuple[Path, str]]:
    import boto3

    bucket, prefix = split_url(url)
    client = boto3.client("s3", endpoint_url=endpoint_url)
    out = []
    for obj in objects(client, bucket, prefix):
        try:
            dest = contained(staging / bucket, obj["Key"], "S3 object key")
        except UnsafePath as exc:
            raise InputFileError(f"s3://{bucket}/{obj['Key']}", str(exc),
                                 "rename or remove that object") from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["Key"], str(dest))
        out.append((dest, f"s3://{bucket}/{obj['Key']}"))
    if not out:
        raise InputFileError(url, "no objects under this prefix", "check the bucket and prefix")
    return sorted(out, key=lambda pair: pair[1])


def hf_records(source: HFSource, root: Path) -> Iterator[Item]:
    """A hub id (online) or a local dataset folder: both go through `datasets` for real."""
    import datasets

    local = root / source.hf
    name = f"hf:{source.hf}[{source.split}]"
    if (local / "dataset_info.json").exists() or (local / "state.json").exists():
        data = datasets.load_from_disk(str(local))
        if isinstance(data, datasets.DatasetDict):
            data = data[source.split]
    else:
        data = datasets.load_dataset(str(local) if local.exists() else source.hf,
                                     name=source.name, split=source.split,
                                     revision=source.revision)
    for i, record in enumerate(data, start=1):
        yield RawRecord(name, i, dict(record))


@dataclass
class StoredCorpora:
    """Where {corpus} sources are read: each corpus's latest stored version, remembered, so the
    dataset's lineage names exactly the versions it read (what `factory forget` follows from a
    document to the datasets and adapters that learnt from it). A document `forgotten` names
    (the sha256 of its text or of its id: the erasure ledger's) is left out even when the
    corpus version still holds it: one stored before the erasure."""

    store: ArtifactStore
    forgotten: frozenset[str] = frozenset()
    read: dict[str, str] = field(default_factory=dict)  # corpus -> version

    def records(self, corpus: str) -> Iterator[Item]:
        """One {"text"} record per document; a transcript gives what was said, without the
        timestamps its passages carry for citations."""
        ref = self.store.current("corpus", corpus)
        self.read[corpus] = ref["version"]
        for entry, text in published_corpus.documents(self.store.local_dir(ref["prefix"])):
            if published_corpus.is_forgotten(entry["doc_id"], entry["sha256"], self.forgotten):
                continue
            spoken = Path(entry["doc_id"]).suffix.lower() in AUDIO_SUFFIXES
            yield RawRecord(f"corpus:{corpus}/{entry['doc_id']}", 1,
                            {"text": spoken_text(text) if spoken else text})


def read_source(source: DatasetSource, root: Path, staging: Path, s3_endpoint_url: str | None,
                corpora: StoredCorpora | None = None,
                traffic: TrafficReader | None = None) -> Iterator[Item]:
    """`corpora`: where a {corpus} source is read, `traffic` a {traffic} source (the gateway's
    export: ingest/traffic.py); the other sources never need them."""
    if isinstance(source, GeneratedSource):
        for i, row in enumerate(math_problems.generate(source.rows, source.seed), start=1):
            yield RawRecord(f"generator:{source.generator}", i, row)
    elif isinstance(source, FileSource):
        for path in local_files(source.path, root):
            yield from read_file(path, str(path.relative_to(root)) if path.is_relative_to(root)
                                 else str(path))
    elif isinstance(source, S3Source):
        for path, name in s3_files(source.s3, staging, s3_endpoint_url):
            yield from read_file(path, name)
    elif isinstance(source, HFSource):
        yield from hf_records(source, root)
    elif isinstance(source, CorpusDatasetSource):
        if corpora is None:
            raise ValueError(f"a {{corpus: {source.corpus}}} source is read from the store")
        yield from corpora.records(source.corpus)
    elif isinstance(source, TrafficSource):
        if traffic is None:
            raise ValueError(f"a {{traffic: {source.traffic}}} source is read from the gateway")
        yield from traffic.records(source)
