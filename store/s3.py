"""S3 locations and listings, written once for every side that reads a bucket: dataset sources,
corpus watchers, the object store and the training box's staging (here, on the ground floor, so
the box can use it without the control plane)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def split_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`, the prefix as written: a trailing '/' keeps
    meaning "this folder" (`docs/` does not match `docs-old/`)."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket:
        raise ValueError(f"not an S3 location (s3://bucket/prefix): {url!r}")
    return bucket, prefix


def objects(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under `prefix` (S3's listing entries: Key, ETag, LastModified, Size), page
    after page; folder placeholders (keys ending in '/') are not objects and are left out."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield obj
