"""Dataset assets: declared sources read, normalised to chat messages, curated, split.

The version is the content hash of the curated splits: it is the lineage key of every adapter
trained on them, so unchanged data means the same version and no retraining. Every row that did
not make it into a split is in `quarantine.jsonl` beside the splits, with file, row, field,
reason and fix.
"""

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from assets.common import (
    WITH_ITS_ASSET,
    Definition,
    current,
    file_digest,
    png_markdown,
    publish,
    store_link,
)
from assets.monitors import retrain_triggers
from assets.watched import (
    FEEDBACK_KEY,
    dataset_is_watched,
    feedback_key,
    traffic_sources,
    watched_key,
)
from config.datasets import CorpusDatasetSource, DatasetSpec
from config.schema import FactoryConfig
from curation import dedupe, formats
from curation.pipeline import CURATION_REASONS, Curated, curate
from curation.splits import SPLITS
from curation.tokens import TokenCounter, percentiles
from erasure.ledger import Ledger, without_erased
from ingest.listings import listing_metadata, watched_listings
from ingest.sources import Item, StoredCorpora, read_source
from ingest.traffic import GatewayTraffic
from resources.gateway_admin import GatewayAdmin
from resources.object_store import ObjectStore


def quarantine_table(curated: Curated, limit: int = 10) -> str:
    if not curated.rejections:
        return "No rows quarantined."
    rows = ["| file | row | field | reason | detail |", "|---|---|---|---|---|"]
    rows += [f"| {r.file} | {r.row} | {r.field or ''} | {r.reason} | {r.detail[:80]} |"
             for r in curated.rejections[:limit]]
    return "\n".join(rows)


def write_dataset(curated: Curated, out: Path) -> list[Path]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    paths = []
    for split in SPLITS:
        path = out / f"{split}.jsonl"
        with path.open("w") as f:
            f.writelines(line + "\n" for line in curated.lines[split])
        paths.append(path)
    with (out / "quarantine.jsonl").open("w") as f:
        for r in curated.rejections:
            f.write(json.dumps(r.to_json(), ensure_ascii=False, default=str) + "\n")
    return paths


def token_budget(store: ObjectStore, spec: DatasetSpec) -> tuple[TokenCounter | None, int | None]:
    """The tokenizer and length limit curation applies: the base model's, when one is named."""
    if not spec.base_model:
        return None, spec.max_tokens
    base_dir = store.local_dir(current(store, "base_model", spec.base_model)["prefix"])
    max_tokens = spec.max_tokens or json.loads((base_dir / "config.json").read_text()).get(
        "max_position_embeddings")
    return TokenCounter(base_dir), max_tokens


def dataset_asset(name: str, spec: DatasetSpec, config: FactoryConfig) -> list[Definition]:
    deps = [dg.AssetKey(["base_model", spec.base_model])] if spec.base_model else []
    deps += [dg.AssetKey(["corpus", s.corpus]) for s in spec.sources
             if isinstance(s, CorpusDatasetSource)]
    deps += [watched_key("dataset", name)] if dataset_is_watched(spec) else []
    deps += [feedback_key(name)] if traffic_sources(spec) else []
    deps += retrain_triggers(config, name)
    key = dg.AssetKey(["dataset", name])

    @dg.asset(
        key=key, group_name="data", kinds={"json"}, deps=deps,
        description=f"{spec.kind} dataset '{name}' from {len(spec.sources)} source(s): "
                    "normalised, PII-scrubbed, deduplicated, split; rejects quarantined.",
    )
    def _dataset(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
        started = time.monotonic()
        run_dir = config.work_dir / "runs" / "dataset" / name
        seen = listing_metadata(watched_listings(  # before reading: a later change is news
            spec.sources, config.root, config.storage.s3_endpoint_url)) \
            if dataset_is_watched(spec) else {}
        counter, max_tokens = token_budget(store, spec)
        ledger = Ledger.read(store)
        corpora = StoredCorpora(store, ledger.document_hashes())
        admin = GatewayAdmin(config.gateway_settings)
        traffic = GatewayTraffic(admin.feedback, spec.kind)
        # the feedback there is now, before reading: what the feedback sensor counts from
        feedback_seen = sum(admin.feedback_count(s.traffic, s.model)["count"]
                            for s in traffic_sources(spec))

        def items() -> Iterator[Item]:
            for source in spec.sources:
                yield from read_source(source, config.root, run_dir / "staging",
                                       config.storage.s3_endpoint_url, corpora, traffic)

        erased: list[str] = []
        curated = curate(without_erased(items(), ledger.record_rules(name), erased),
                         spec, counter, max_tokens)
        if erased:
            context.log.info(f"left out {len(erased)} erased record(s) (`factory forget`): "
                             f"{', '.join(erased[:10])}")
        paths = write_dataset(curated, run_dir / "out")
        version = file_digest(*paths)
        counts = {s: len(curated.lines[s]) for s in SPLITS}
        publish(store, "dataset", name, version, run_dir / "out", counts=counts,
                invalid_fraction=curated.invalid_fraction, dataset_kind=spec.kind,
                **({"corpora": corpora.read} if corpora.read else {}),
                **({"traffic": traffic.read} if traffic.read else {}))
        ref = current(store, "dataset", name)
        context.log.info(f"dataset {name}@{version}: {curated.rows_in} rows in, {counts}, "
                         f"quarantined {dict(curated.reasons)}")
        meta: dict[str, object] = {
            "version": version,
            "rows_in": curated.rows_in,
            **{f"{s}_rows": n for s, n in counts.items()},
            "quarantined": len(curated.rejections),
            "erased_records_left_out": len(erased),
            "quarantine_reasons": dict(curated.reasons),
            "invalid_fraction": round(curated.invalid_fraction, 4),
            "quarantine_examples": dg.MetadataValue.md(quarantine_table(curated)),
            "pii_scrubbed": dict(curated.pii_counts),
            "seconds": round(time.monotonic() - started, 2),
            "stage_seconds": {k: round(v, 2) for k, v in curated.seconds.items()},
            "location": store_link(store, ref["prefix"]),
            **seen,
            **({"traffic_read": traffic.read, FEEDBACK_KEY: feedback_seen}
               if traffic.read else {}),
        }
        if curated.lengths and max_tokens:
            meta |= {
                "token_lengths": percentiles(curated.lengths),
                "max_tokens": max_tokens,
                "over_length_truncated": curated.truncated,
                "token_histogram": length_histogram(curated.lengths, max_tokens,
                                                    f"{name}: tokens per example"),
            }
        if curated.lines["train"]:
            meta["example"] = dg.MetadataValue.json(json.loads(curated.lines["train"][0]))
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))

    def load(store: ObjectStore) -> tuple[dict[str, list[dict]], dict]:
        ref = current(store, "dataset", name)
        root = store.local_dir(ref["prefix"])
        rows = {s: [json.loads(line) for line in Path(root, f"{s}.jsonl").read_text()
                    .splitlines()] for s in SPLITS}
        return rows, ref

    @dg.asset_check(name="schema_valid", asset=key, blocking=True,
                    description="Every curated row is a valid example of the dataset's kind.",
                    automation_condition=WITH_ITS_ASSET)
    def _schema(store: ObjectStore) -> dg.AssetCheckResult:
        rows, _ = load(store)
        bad = [(s, i) for s in SPLITS for i, r in enumerate(rows[s])
               if isinstance(formats.normalise(r, spec.kind, "auto"), formats.Invalid)]
        return dg.AssetCheckResult(passed=not bad, metadata={"invalid_rows": len(bad),
                                                             "first": str(bad[:5])})

    @dg.asset_check(name="rejected_fraction", asset=key, blocking=True,
                    description="Bad input stays under quality.max_rejected_fraction.",
                    automation_condition=WITH_ITS_ASSET)
    def _rejected(store: ObjectStore) -> dg.AssetCheckResult:
        fraction = current(store, "dataset", name)["invalid_fraction"]
        limit = spec.quality.max_rejected_fraction
        return dg.AssetCheckResult(
            passed=fraction <= limit,
            metadata={"invalid_fraction": fraction, "limit": limit,
                      "ignored_reasons": sorted(CURATION_REASONS)},
            description=None if fraction <= limit else
            f"{fraction:.1%} of rows were rejected (limit {limit:.1%}); read quarantine.jsonl",
        )

    @dg.asset_check(name="min_rows_per_split", asset=key, blocking=True,
                    description="Each split has at least the configured number of examples.",
                    automation_condition=WITH_ITS_ASSET)
    def _min_rows(store: ObjectStore) -> dg.AssetCheckResult:
        counts = current(store, "dataset", name)["counts"]
        minimum = {"train": spec.quality.min_train, "val": spec.quality.min_val,
                   "test": spec.quality.min_test}
        short = {s: counts[s] for s in SPLITS if counts[s] < minimum[s]}
        return dg.AssetCheckResult(passed=not short,
                                   metadata={"counts": counts, "minimum": minimum,
                                             "short": short})

    @dg.asset_check(name="splits_disjoint", asset=key, blocking=True,
                    description="No prompt appears in two splits (no train/test leak).",
                    automation_condition=WITH_ITS_ASSET)
    def _disjoint(store: ObjectStore) -> dg.AssetCheckResult:
        rows, _ = load(store)
        prompts = {s: {dedupe.exact_key(formats.prompt_text(r)) for r in rows[s]}
                   for s in SPLITS}
        overlaps = {f"{a}&{b}": len(prompts[a] & prompts[b])
                    for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
        return dg.AssetCheckResult(passed=not any(overlaps.values()),
                                   metadata={"overlaps": overlaps})

    return [_dataset, _schema, _rejected, _min_rows, _disjoint]


def length_histogram(lengths: list[int], context: int, title: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(lengths, bins=40, color="#48a")
    ax.axvline(context, color="#c33", linestyle="--", label=f"sequence length {context}")
    ax.set_xlabel("tokens per example (chat template applied)")
    ax.set_ylabel("examples")
    ax.set_title(title)
    ax.legend()
    return png_markdown(fig, title)
