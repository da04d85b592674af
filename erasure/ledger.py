"""Erasure: what a user asks to forget stays out of every corpus and dataset, and the lineage
says which models learnt from it.

The ledger (`erasure/<id>.json` in the object store, one object per erasure) is both the rule
the corpus and dataset assets apply on every run and the audit of each erasure (who, when, the
assets touched). Its rules are hashes, never the erased content: a document's sha256 and the
sha256 of its id; a record's sha256 (its raw fields as canonical JSON) or a field and the sha256
of its value (so a customer's future rows are left out too). Its description names documents
and file:row places, which an audit needs and which are not the content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ingest.sources import Item, RawRecord
from store.artifacts import ArtifactStore
from store.backends import ArtifactMissing

LEDGER = "erasure"  # erasure/<id>.json, one per erasure


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record_hash(data: dict[str, Any]) -> str:
    """A raw record's identity: its fields as canonical JSON, whatever file format held it."""
    return sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str))


def texts(value: Any) -> Iterator[str]:
    """Every string inside a record (messages nested in lists and dicts included)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)
    elif value is not None:
        yield str(value)


@dataclass(frozen=True)
class RecordRules:
    """What a dataset leaves out: exact records, and every record whose field has a value."""

    rows: frozenset[str] = frozenset()
    fields: frozenset[tuple[str, str]] = frozenset()  # (field, sha256 of value)

    def erases(self, data: dict[str, Any]) -> bool:
        if record_hash(data) in self.rows:
            return True
        return any(f in data and sha256(str(data[f])) == h for f, h in self.fields)


@dataclass
class Ledger:
    """One object per erasure under `erasure/`: two erasures at once (one may retrain for
    hours) never overwrite each other's rule."""

    store: ArtifactStore
    entries: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, store: ArtifactStore) -> Ledger:
        keys = [k for k in store.list(f"{LEDGER}/") if k.endswith(".json")]
        entries = [store.get_json(k) for k in keys]
        return cls(store, sorted(entries, key=lambda e: e["when"]))

    def write(self, entry: dict[str, Any]) -> None:
        """Add or rewrite (as the erasure progressed) one erasure's entry."""
        self.entries = [e for e in self.entries if e["id"] != entry["id"]] + [entry]
        self.store.put_json(f"{LEDGER}/{entry['id']}.json", entry)

    def document_hashes(self) -> frozenset[str]:
        """sha256 of every erased document's text and of its id."""
        return frozenset(h for e in self.entries if e["subject"]["kind"] == "document"
                         for key in ("text_sha256", "doc_id_sha256") for h in e["subject"][key])

    def record_rules(self, dataset: str) -> RecordRules:
        rows: set[str] = set()
        fields: set[tuple[str, str]] = set()
        for e in self.entries:
            subject = e["subject"]
            if subject["kind"] != "record" or subject["dataset"] != dataset:
                continue
            rows.update(subject["row_sha256"])
            if subject.get("field"):
                fields.add((subject["field"], subject["value_sha256"]))
        return RecordRules(frozenset(rows), frozenset(fields))


def without_erased(items: Iterable[Item], rules: RecordRules, erased: list[str]
                   ) -> Iterator[Item]:
    """The items minus erased records; each one left out is noted in `erased` as file:row."""
    if not (rules.rows or rules.fields):
        yield from items
        return
    for item in items:
        if isinstance(item, RawRecord) and rules.erases(item.data):
            erased.append(f"{item.file}:{item.row}")
            continue
        yield item


def stored_versions(store: ArtifactStore, kind: str, name: str) -> dict[str, dict[str, Any]]:
    """Every complete stored version of `kind/name` with its manifest, oldest first."""
    prefixes = sorted({"/".join(k.split("/")[:3]) for k in store.list(f"{kind}/{name}/")
                       if k.count("/") >= 3})
    manifests = {}
    for prefix in prefixes:
        try:
            manifests[prefix.split("/")[2]] = store.manifest(prefix)
        except ArtifactMissing:  # incomplete: no reader takes it as a version
            continue
    return dict(sorted(manifests.items(), key=lambda v: v[1].get("created_at", 0)))


def versions_holding(store: ArtifactStore, name: str, line_hashes: set[str],
                     row_hashes: set[str]) -> list[str]:
    """The stored versions of dataset `name` with a split row whose sha256 is in `line_hashes`
    or a quarantined record whose `record_hash` is in `row_hashes`."""
    held = []
    for version in stored_versions(store, "dataset", name):
        root = store.local_dir(f"dataset/{name}/{version}")
        # "\n" only: a row may hold U+2028 and friends, which splitlines() would cut at
        rows = [line for file in ("train.jsonl", "val.jsonl", "test.jsonl")
                if (root / file).is_file() for line in (root / file).read_text().split("\n")]
        quarantined = [json.loads(line).get("record") for line in
                       (root / "quarantine.jsonl").read_text().split("\n") if line.strip()] \
            if (root / "quarantine.jsonl").is_file() else []
        if any(sha256(line) in line_hashes for line in rows) or any(
                isinstance(r, dict) and record_hash(r) in row_hashes for r in quarantined):
            held.append(version)
    return held


def adapters_trained_on(store: ArtifactStore, adapters: dict[str, list[str]],
                        datasets: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """{adapter: {version: prefix}} of the versions trained on a `dataset@version` in
    `datasets`. `adapters` maps each adapter to the names it stores versions under (itself and
    its sweep's trials: the registry knows a sweep's winner by the adapter's name)."""
    tainted = {f"{d}@{v}" for d, versions in datasets.items() for v in versions}
    out: dict[str, dict[str, str]] = {}
    for adapter, stored_as in adapters.items():
        for name in stored_as:
            for version, manifest in stored_versions(store, "adapter", name).items():
                if manifest.get("dataset") in tainted:
                    out.setdefault(adapter, {})[version] = f"adapter/{name}/{version}"
    return out


def mixtures_of(store: ArtifactStore, mixtures: Iterable[str],
                adapters: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """{mixture: [versions]} built from a flagged adapter version."""
    out: dict[str, list[str]] = {}
    for mixture in mixtures:
        for version, manifest in stored_versions(store, "mixture", mixture).items():
            components = manifest.get("components", {})
            if any(v in adapters.get(a, {}) for a, v in components.items()):
                out.setdefault(mixture, []).append(version)
    return out


def purge(store: ArtifactStore, kind: str, name: str, versions: Iterable[str]) -> list[str]:
    """Delete stored versions that hold erased content; returns their prefixes."""
    gone = []
    for version in versions:
        store.delete_prefix(f"{kind}/{name}/{version}")
        gone.append(f"{kind}/{name}/{version}")
    return gone
