"""`factory forget`: erase a document or a record everywhere the graph put it, and say which
models learnt from it.

Order matters. The selector is resolved against what is stored now (nothing changes if it
matches nothing); the lineage is read before anything is deleted; the ledger entry is written
before any run, so every asset that runs from then on leaves the item out; stored versions that
held it are purged; the affected assets are materialized through the normal graph (tagged with
the erasure's id); adapters trained on it are marked, then the project's `erasure` policy acts:
`flag` stops there, `retrain` runs everything downstream of the new dataset version through the
gate, `unpublish` takes marked champions out of the registry and re-materializes the
deployments that served them. The ledger entry ends with what was touched.
"""

from __future__ import annotations

import getpass
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.corpora import documents_named
from assets.datasets import token_budget
from assets.deployments import published
from assets.watched import traffic_sources
from config.adapters import trial_names
from config.schema import FactoryConfig
from curation.pipeline import curate
from erasure.ledger import (
    Ledger,
    adapters_trained_on,
    mixtures_of,
    purge,
    record_hash,
    sha256,
    stored_versions,
    texts,
    versions_holding,
)
from ingest import published_corpus
from ingest.sources import RawRecord, StoredCorpora, read_source
from ingest.traffic import GatewayTraffic
from models.cards import mark_erased_card
from pipelines.graph import make_definitions, resources_for
from pipelines.runs import failed_steps, materialize
from resources.gateway_admin import GatewayAdmin, GatewayUnavailable
from resources.object_store import ObjectStore
from store.keys import TRANSCRIPTS
from store.registry import Registry

HOLDERS = {"corpora": "corpus", "datasets": "dataset"}  # the report's word for each kind


class NothingToForget(ValueError):
    """The selector matched nothing stored: nothing was changed."""


@dataclass
class Found:
    """What a selector resolved to, before anything changes. `described` names files and rows,
    never their content."""

    subject: dict[str, Any]
    described: str
    corpora: dict[str, list[str]] = field(default_factory=dict)  # corpus -> versions holding it
    datasets: dict[str, list[str]] = field(default_factory=dict)  # dataset -> versions holding it
    doc_ids: list[str] = field(default_factory=list)  # the erased documents, as indexes name them
    transcripts: list[str] = field(default_factory=list)  # stored transcripts of the recordings
    phrases: list[str] = field(default_factory=list)  # kept chats holding one are purged too


def find_document(store: ObjectStore, config: FactoryConfig, name: str) -> Found:
    """A document by its id (`docs/a.txt`, `s3://...`) or its path inside the corpus source,
    every copy of its text in any corpus, under whatever name, and the dataset versions read
    from a corpus version holding it. A name that means several documents is refused with the
    candidates: an erasure is never a guess."""
    listings = {(corpus, version): published_corpus.listing(store.local_dir(
        f"corpus/{corpus}/{version}"))
        for corpus in config.corpora for version in stored_versions(store, "corpus", corpus)}
    every = [d for docs in listings.values() for d in docs]
    meant = documents_named(name, (d["doc_id"] for d in every))
    if not meant:
        raise NothingToForget(f"no stored corpus holds a document named {name!r}; name it as "
                              "the corpus does (its path inside the project or its s3:// URL) "
                              "or by its path inside the corpus source")
    if len(meant) > 1:
        raise NothingToForget(f"{name!r} names {len(meant)} documents: "
                              f"{', '.join(sorted(meant))}; name one by its full id")
    named = {d["sha256"] for d in every if d["doc_id"] == meant[0]}
    doc_ids, corpora = set(), {}
    for (corpus, version), docs in listings.items():
        hits = [d["doc_id"] for d in docs if d["sha256"] in named]
        if hits:
            corpora.setdefault(corpus, []).append(version)
            doc_ids.update(hits)
    return Found({"kind": "document", "doc_id_sha256": sorted(sha256(d) for d in doc_ids),
                  "text_sha256": sorted(named)},
                 f"{len(doc_ids)} document(s): {', '.join(sorted(doc_ids))}", corpora=corpora,
                 datasets=datasets_read_from(store, config, corpora), doc_ids=sorted(doc_ids),
                 transcripts=transcripts_of(store, doc_ids, named), phrases=sorted(doc_ids))


def transcripts_of(store: ObjectStore, doc_ids: set[str], texts: set[str]) -> list[str]:
    """The stored transcripts (kept so an unchanged recording is not transcribed again) of the
    recordings `doc_ids` names or whose transcript is one of `texts` (sha256)."""
    return [key for key in store.list(f"{TRANSCRIPTS}/") if key.endswith(".json") and (
        (t := store.get_json(key))["file"] in doc_ids or sha256(t["document"]) in texts)]


def datasets_read_from(store: ObjectStore, config: FactoryConfig,
                       corpora: dict[str, list[str]]) -> dict[str, list[str]]:
    """The stored dataset versions whose lineage names one of these corpus versions (a dataset
    with a {corpus} source records the versions it read)."""
    held: dict[str, list[str]] = {}
    for dataset in config.datasets:
        for version, manifest in stored_versions(store, "dataset", dataset).items():
            read = manifest.get("corpora") or {}
            if any(read.get(corpus) in versions for corpus, versions in corpora.items()):
                held.setdefault(dataset, []).append(version)
    return held


def find_records(store: ObjectStore, config: FactoryConfig, dataset: str,
                 where: tuple[str, str] | None, match: str | None) -> Found:
    """Records of `dataset`'s sources whose `field` equals a value, or whose text contains
    `match`; and the stored versions of the dataset holding any of them (after curation)."""
    spec = config.datasets[dataset]
    ledger = Ledger.read(store)
    staging = config.work_dir / "staging" / "forget" / dataset
    traffic = GatewayTraffic(GatewayAdmin(config.gateway_settings).feedback, spec.kind)
    try:
        matched = [item for source in spec.sources
                   for item in read_source(source, config.root, staging,
                                           config.storage.s3_endpoint_url,
                                           StoredCorpora(store, ledger.document_hashes()),
                                           traffic)
                   if isinstance(item, RawRecord) and (
                       (where is not None and where[0] in item.data
                        and str(item.data[where[0]]) == where[1])
                       or (match is not None and any(match in t for t in texts(item.data))))]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not matched and where is None:
        raise NothingToForget(f"no record of dataset {dataset!r}'s sources contains that text")
    counter, max_tokens = token_budget(store, spec)
    curated = curate(iter(matched), spec, counter, max_tokens)
    lines = {sha256(line) for rows in curated.lines.values() for line in rows}
    rows = {record_hash(i.data) for i in matched}
    held = versions_holding(store, dataset, lines, rows)
    subject: dict[str, Any] = {"kind": "record", "dataset": dataset, "row_sha256": sorted(rows)}
    if where is not None:  # the rule outlives today's rows: this customer's next ones too
        subject |= {"field": where[0], "value_sha256": sha256(where[1])}
    places = ", ".join(f"{i.file}:{i.row}" for i in matched[:20])
    return Found(subject, f"{len(matched)} record(s) of dataset {dataset}"
                          + (f" ({places})" if places else ""),
                 datasets={dataset: held} if held else {}, phrases=[match] if match else [])


def kept_chats(config: FactoryConfig, found: Found, dry_run: bool) -> dict[str, Any]:
    """Stored completions (and their feedback) holding the erased text, purged in the gateway
    (its admin API). Without the admin token, or with a gateway that does not answer, the kept
    chats are not searched and the report says so and why, unless a dataset reads traffic:
    then the erasure cannot be whole and fails."""
    settings = config.gateway_settings
    if not found.phrases:
        return {}
    reads_traffic = any(traffic_sources(spec) for spec in config.datasets.values())
    if settings.admin_token is None and not reads_traffic:
        return {"checked": False, "why": f"the gateway's kept chats were not searched: set "
                                         f"{settings.admin_token_env} to its admin token"}
    try:
        done = GatewayAdmin(settings).purge_completions(
            [p for p in found.phrases if len(p) >= 3], dry_run=dry_run)
    except GatewayUnavailable as exc:
        if reads_traffic:  # a dataset is made of kept chats: the erasure cannot be whole
            raise
        return {"checked": False, "why": f"the gateway's kept chats were not searched: {exc}"}
    return {"checked": True, "completions": done["completions"], "feedback": done["feedback"],
            "projects": sorted({row["project"] for row in done["data"]})}


def lineage(store: ObjectStore, config: FactoryConfig, found: Found
            ) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Every adapter version trained on a version that held the item, the mixtures built from
    them and the deployments serving any of those now; and each flagged version's prefix."""
    stored_as = {n: [*trial_names(n, spec), n] for n, spec in config.adapters.items()}
    adapters = adapters_trained_on(store, stored_as, found.datasets)
    mixtures = mixtures_of(store, config.mixtures, adapters)
    serving = []
    for deployment in config.deployments:
        served = (published(store, deployment) or {}).get("adapters", {})
        if any(served.get(a) in versions for a, versions in {**adapters, **mixtures}.items()):
            serving.append(deployment)
    return {"adapters": {a: sorted(v) for a, v in adapters.items()}, "mixtures": mixtures,
            "deployments": serving}, adapters


def affected_assets(config: FactoryConfig, found: Found, policy: str) -> list[str]:
    """What runs right away: corpora and their indexes, datasets; with `retrain`, everything
    downstream of those datasets (adapters, evaluations, promotions, deployments)."""
    keys = [k for c in found.corpora for k in (f"corpus/{c}", f"index/{c}")]
    datasets = [dg.AssetKey(["dataset", d]) for d in found.datasets]
    if datasets:
        selection = dg.AssetSelection.assets(*datasets)
        if policy == "retrain":
            selection = selection.downstream()
        graph = make_definitions(config).resolve_asset_graph()
        keys += sorted(k.to_user_string() for k in selection.resolve(graph))
    return keys


def forget(config: FactoryConfig, store: ObjectStore, found: Found, who: str | None = None,
           dry_run: bool = False) -> dict[str, Any]:
    """Carry out the erasure (or, with `dry_run`, only say what it would touch); returns the
    ledger entry."""
    policy = config.erasure
    flagged, prefixes = lineage(store, config, found)
    entry: dict[str, Any] = {
        "id": f"erasure-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "who": who or getpass.getuser(), "when": time.time(), "policy": policy,
        "subject": found.subject, "what": found.described,
        "held_by": {"corpora": found.corpora, "datasets": found.datasets},
        "flagged": flagged, "materialize": affected_assets(config, found, policy)}
    if dry_run:
        return entry | {"kept_chats": kept_chats(config, found, dry_run=True)}
    ledger = Ledger.read(store)
    ledger.write({**entry, "state": "started"})  # from here on every run leaves it out
    entry["kept_chats"] = kept_chats(config, found, dry_run=False)
    for key in found.transcripts:
        store.backend.delete(key)
    entry["purged"] = found.transcripts + [p for kind, held in (("corpus", found.corpora),
                                            ("dataset", found.datasets))
                       for name, versions in held.items() for p in purge(store, kind, name,
                                                                          versions)]
    for corpus in found.corpora:  # at once, whatever the re-index below makes of the corpus
        delete_chunks(resources_for(config)["chroma"], corpus, found.doc_ids)
    registry = Registry(store)
    for adapter, versions in prefixes.items():
        registry.mark_erased(adapter, sorted(versions), entry["id"])
        marks = registry.read(adapter)["erased"]
        for version, prefix in versions.items():
            mark_erased_card(store, prefix, marks[version])
            scrub_training_copies(config, prefix)
    actions = []
    if policy == "unpublish":
        for adapter, versions in flagged["adapters"].items():
            if (registry.champion(adapter) or {}).get("version") in versions:
                registry.unpublish(adapter, f"trained on erased data ({entry['id']})",
                                   who=entry["who"])
                actions.append(f"unpublished {adapter}")
        entry["materialize"] += [f"deployment/{d}" for d in flagged["deployments"]]
    failed, checks = [], []
    if entry["materialize"]:  # an empty selection would mean the whole graph
        failed, checks = failed_steps(materialize(config, entry["materialize"],
                                                  tags={"factory/erasure": entry["id"]}))
    if policy == "retrain":
        for adapter, versions in flagged["adapters"].items():
            champion = (registry.champion(adapter) or {}).get("version")
            actions.append(f"retrained {adapter}: champion {champion}" + (
                " (still a version trained on erased data: the gate kept it)"
                if champion in versions else ""))
    entry |= {"actions": actions, "failed": failed + checks,
              "state": "done" if not failed else "failed", "finished": time.time()}
    ledger.write(entry)
    return entry


def delete_chunks(chroma: Any, corpus: str, doc_ids: list[str]) -> None:
    """The documents' chunks out of the collection now, not only when the index next runs."""
    from chromadb.errors import NotFoundError

    try:
        chunks = chroma.client().get_collection(corpus)
    except (NotFoundError, ValueError):
        return
    chunks.delete(where={"document_id": {"$in": doc_ids}})
    chroma.mark_written()


def scrub_training_copies(config: FactoryConfig, prefix: str) -> None:
    """The training run's copy of its data and Axolotl's tokenised cache of it; the adapter
    itself stays (it is what the flag and the policy are about)."""
    _, name, version = prefix.split("/")
    run_dir = config.work_dir / "runs" / "adapter" / name / version
    for copy in ("data", "prepared"):
        shutil.rmtree(run_dir / copy, ignore_errors=True)


def report(entry: dict[str, Any]) -> str:
    """The erasure as a person reads it; the ledger holds the same, hashes included."""
    flagged = entry["flagged"]
    lines = [f"{entry['id']} by {entry['who']} (policy: {entry['policy']}"
             + (", dry run)" if "state" not in entry else f", {entry['state']})"),
             f"  forgot: {entry['what']}"]
    for kind, held in entry["held_by"].items():
        for name, versions in held.items():
            lines.append(f"  {HOLDERS[kind]} {name}: held by "
                         f"version(s) {', '.join(versions)}")
    for prefix in entry.get("purged", []):
        lines.append(f"  purged {prefix}")
    chats = entry.get("kept_chats") or {}
    if chats.get("checked"):
        verb = "purged" if "state" in entry else "would purge"
        lines.append(f"  kept chats: {verb} {chats['completions']} stored completion(s) and "
                     f"{chats['feedback']} feedback"
                     + (f" in {', '.join(chats['projects'])}" if chats["projects"] else ""))
    elif chats:
        lines.append(f"  kept chats: {chats['why']}")
    for adapter, versions in flagged["adapters"].items():
        lines.append(f"  adapter {adapter}: trained on erased data in {', '.join(versions)}")
    for mixture, versions in flagged["mixtures"].items():
        lines.append(f"  mixture {mixture}: built from them in {', '.join(versions)}")
    for deployment in flagged["deployments"]:
        lines.append(f"  deployment {deployment}: was serving one of them")
    if not any(flagged.values()):
        lines.append("  no adapter learnt from it")
    lines.append(f"  {'would run' if 'state' not in entry else 'ran'}: "
                 f"{', '.join(entry['materialize']) or 'nothing'}")
    lines += [f"  {a}" for a in entry.get("actions", [])]
    lines += [f"  FAILED {f}" for f in entry.get("failed", [])]
    return "\n".join(lines)

