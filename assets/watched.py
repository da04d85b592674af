"""Watched folders and S3 prefixes as observable source assets.

`watched/<corpus|dataset>/<name>` is the listing of the files a corpus or a dataset reads; its
data version is the listing's digest. The watch sensor (sensors/watchers.py) records an
observation whenever the listing changed since its cursor, and the corpus or dataset depends on
the watched asset, so its automation condition (sensors/automation.py) rebuilds it, and what
follows, when the version changed. An observation recorded twice with the same version (a crash
before the sensor's cursor was stored) is one change, never a second run.

`feedback/dataset/<name>` is the same for a dataset read from traffic (a {traffic} source): the
feedback people gave the chats the gateway kept. Its sensor (sensors/watchers.py) records an
observation once `rebuild_after` new feedback arrived, so retrain, gate, promote and hot-load
follow on their own.
"""

import warnings
from dataclasses import dataclass

import dagster as dg

from config.corpora import CorpusSpec
from config.datasets import DatasetSpec, FileSource, S3Source, TrafficSource
from config.gateway import GatewaySettings
from config.schema import FactoryConfig
from ingest.listings import Listing, corpus_suffixes, listing_digest, watched_listings
from resources.gateway_admin import GatewayAdmin


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


FEEDBACK_KEY = "traffic_feedback"  # a dataset's metadata: the feedback there was when it read


def traffic_sources(spec: DatasetSpec) -> list[TrafficSource]:
    return [s for s in spec.sources if isinstance(s, TrafficSource)]


def feedback_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["feedback", "dataset", dataset])


@dataclass(frozen=True)
class FeedbackWatch:
    """The feedback a dataset's {traffic} sources read, and when it is enough to rebuild."""

    dataset: str
    sources: tuple[TrafficSource, ...]
    gateway: GatewaySettings

    @property
    def key(self) -> dg.AssetKey:
        return feedback_key(self.dataset)

    @property
    def reader(self) -> dg.AssetKey:
        return dg.AssetKey(["dataset", self.dataset])

    @property
    def sensor_name(self) -> str:
        return f"feedback_dataset_{self.dataset.replace('-', '_')}"

    @property
    def rebuild_after(self) -> int:
        return min(s.rebuild_after for s in self.sources)

    @property
    def poll_s(self) -> int:
        return min(s.poll_s for s in self.sources)

    def count(self) -> tuple[int, int]:
        """All feedback the sources could read, and the newest's id (the gateway's admin API)."""
        admin = GatewayAdmin(self.gateway)
        counts = [admin.feedback_count(s.traffic, s.model) for s in self.sources]
        return sum(c["count"] for c in counts), max(c["newest_id"] for c in counts)


def feedback_watches(config: FactoryConfig) -> list[FeedbackWatch]:
    return [FeedbackWatch(name, tuple(traffic_sources(spec)), config.gateway_settings)
            for name, spec in config.datasets.items() if traffic_sources(spec)]


def feedback_asset(watch: FeedbackWatch) -> dg.SourceAsset:
    """Observing it by hand ("Observe" in the UI) versions all feedback there is now, so the
    dataset rebuilds without waiting for `rebuild_after`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.observable_source_asset(
            key=watch.key, group_name="data",
            description=f"The feedback dataset/{watch.dataset} is made from (the gateway's kept "
                        f"chats); {watch.sensor_name} records it every {watch.rebuild_after} "
                        "new ratings, corrections or choices.")
        def _feedback() -> dg.DataVersion:
            count, newest = watch.count()
            return dg.DataVersion(f"{count}:{newest}")

    return _feedback
