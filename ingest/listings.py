"""What a folder or an S3 prefix holds now, as the sources of datasets and corpora see it: one
entry per file (its key, and a size-and-time or S3 ETag that changes when the file does), and a
digest of the whole listing that an asset records as it starts reading. The watch sensors
(sensors/) compare these listings; the assets only record them."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.corpora import CorpusSpec
from config.datasets import FileSource, S3Source
from ingest.documents import DOCUMENTS
from ingest.readers import TABULAR
from resources.speech_client import AUDIO_SUFFIXES
from store.s3 import objects, split_url


@dataclass(frozen=True)
class Entry:
    key: str
    modified: float
    etag: str


def listing_digest(entries: list[Entry]) -> str:
    """What an asset records of the files it read, and a sensor without a cursor compares."""
    lines = sorted(f"{e.key}\t{e.etag}" for e in entries)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]


# what a watch sees: the files a dataset or corpus reads, and recordings where a corpus
# transcribes them (anywhere else they are quarantined, so a new one starts no run)
READ = frozenset(DOCUMENTS | TABULAR)


def corpus_suffixes(spec: CorpusSpec) -> frozenset[str]:
    return READ | frozenset(AUDIO_SUFFIXES) if spec.transcribe else READ


def list_files(pattern: str, root: Path, suffixes: frozenset[str] = READ) -> list[Entry]:
    """Every supported file in a folder (recursively) or matching a glob, relative to `root`;
    size and mtime in nanoseconds stand in for an ETag."""
    base = root / pattern
    paths = base.rglob("*") if base.is_dir() else map(Path, glob.glob(str(base), recursive=True))
    out = []
    for path in sorted(p for p in paths if p.is_file()):
        if path.suffix.lower() not in suffixes or path.name.startswith("."):
            continue
        stat = path.stat()
        out.append(Entry(str(path), stat.st_mtime, f"{stat.st_size}-{stat.st_mtime_ns}"))
    return out


def list_s3(url: str, endpoint_url: str | None, suffixes: frozenset[str] = READ
            ) -> list[Entry]:
    import boto3

    bucket, prefix = split_url(url)
    client = boto3.client("s3", endpoint_url=endpoint_url)
    return [Entry(obj["Key"], obj["LastModified"].timestamp(), obj["ETag"].strip('"'))
            for obj in objects(client, bucket, prefix)
            if Path(obj["Key"]).suffix.lower() in suffixes]


Listing = Callable[[], list[Entry]]
# the metadata key under which a watched asset records the digest of the listing it read
LISTING_KEY = "source_listing"


def listing_for(source: FileSource | S3Source, root: Path, s3_endpoint_url: str | None,
                suffixes: frozenset[str] = READ) -> Listing:
    if isinstance(source, S3Source):
        bucket, _ = split_url(source.s3)
        return lambda: [Entry(f"s3://{bucket}/{e.key}", e.modified, e.etag)
                        for e in list_s3(source.s3, s3_endpoint_url, suffixes)]
    return lambda: list_files(source.path, root, suffixes)


def watched_listings(sources: list[object], root: Path, s3_endpoint_url: str | None,
                     suffixes: frozenset[str] = READ) -> list[Listing]:
    """The listings of the sources a sensor can watch, in the order the asset reads them."""
    return [listing_for(s, root, s3_endpoint_url, suffixes) for s in sources
            if isinstance(s, FileSource | S3Source)]


def listing_metadata(listings: list[Listing]) -> dict[str, str]:
    """What a watched asset records as it starts reading: the sensor's view of its inputs."""
    return {LISTING_KEY: listing_digest([e for listing in listings for e in listing()])}
