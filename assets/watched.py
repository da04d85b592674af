"""Watched folders and S3 prefixes as observable source assets.

`watched/<corpus|dataset>/<name>` is the listing of the files a corpus or a dataset reads; its
data version is the listing's digest. The watch sensor (sensors/watchers.py) records an
observation whenever the listing changed since its cursor, and the corpus or dataset depends on
the watched asset, so its automation condition (sensors/automation.py) rebuilds it, and what
follows, when the version changed. An observation recorded twice with the same version (a crash
before the sensor's cursor was stored) is one change, never a second run.
"""

import warnings
from dataclasses import dataclass

import dagster as dg

from config.corpora import CorpusSpec
from config.datasets import DatasetSpec, FileSource, S3Source
from config.schema import FactoryConfig
from ingest.listings import Listing, corpus_suffixes, listing_digest, watched_listings


def corpus_is_watched(spec: CorpusSpec) -> bool:
    return isinstance(spec.source, FileSource | S3Source) and spec.watch.enabled


def dataset_is_watched(spec: DatasetSpec) -> bool:
    return bool(spec.watch and spec.watch.enabled)


def watched_key(family: str, name: str) -> dg.AssetKey:
    return dg.AssetKey(["watched", family, name])


@dataclass(frozen=True)
class Watch:
    reader: dg.AssetKey  # the corpus or dataset that reads the files
    listings: list[Listing]
    interval_s: int

    @property
    def key(self) -> dg.AssetKey:
        return watched_key(*self.reader.path)

    @property
    def sensor_name(self) -> str:
        family, name = self.reader.path
        return f"watch_{family}_{name.replace('-', '_')}"

    def digest(self) -> str:
        return listing_digest([e for listing in self.listings for e in listing()])


def watches(config: FactoryConfig) -> list[Watch]:
    endpoint = config.storage.s3_endpoint_url
    found = [Watch(dg.AssetKey(["corpus", name]), watched_listings(
                 [spec.source], config.root, endpoint, corpus_suffixes(spec)),
                 spec.watch.interval_s)
             for name, spec in config.corpora.items() if corpus_is_watched(spec)]
    found += [Watch(dg.AssetKey(["dataset", name]), watched_listings(
                  spec.sources, config.root, endpoint), spec.watch.interval_s)
              for name, spec in config.datasets.items()
              if dataset_is_watched(spec) and spec.watch is not None]
    return found


def watched_asset(watch: Watch) -> dg.SourceAsset:
    """Observing it (the sensor, or "Observe" in the UI) lists the files and versions them."""
    with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _observable(watch)


def _observable(watch: Watch) -> dg.SourceAsset:
    @dg.observable_source_asset(
        key=watch.key, group_name="data" if watch.reader.path[0] == "dataset" else "rag",
        description=f"The files {watch.reader.to_user_string()} reads; its version is their "
                    f"listing (observed by {watch.sensor_name} every {watch.interval_s}s).")
    def _listing() -> dg.DataVersion:
        return dg.DataVersion(watch.digest())

    return _listing
