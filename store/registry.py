"""The registry of champions: `registry/<adapter>.json`, its one home.

The control plane writes it (the promotion asset, `factory forget`, `factory unpublish`), and
the replica's resolver, the gateway's model cards and the Studio read it, each through these
functions, so the format is written once (the name rule is store/keys.py's). The document holds the
champion, the full promotion history (promoted, rejected, unpublished: who, when, why) and the
versions trained on data erased since (`erased`: version -> erasure ids).
"""

from __future__ import annotations

import getpass
import re
import time
from typing import Any, Protocol

from store.backends import ArtifactMissing
from store.keys import NAME_PART, registry_key

# what a client may ask a replica for: `<adapter>` (its champion) or `<adapter>@<version>`
SERVED_NAME = re.compile(rf"^(?P<name>{NAME_PART})(@(?P<version>[A-Za-z0-9_-]{{1,64}}))?$")


def empty() -> dict[str, Any]:
    return {"champion": None, "history": [], "erased": {}}


def champion_of(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The champion's promotion entry ("version", "prefix", "who", "when", "why", "scores",
    "previous"), or None."""
    return (state or {}).get("champion") or None


def events_of(state: dict[str, Any], version: str) -> list[dict[str, Any]]:
    """Every recorded event of one version, oldest first."""
    return [e for e in state.get("history", []) if e["version"] == version]


def promotion_of(state: dict[str, Any], version: str) -> dict[str, Any] | None:
    """The latest promotion of `version` (a version once champion stays servable by name)."""
    promoted = [e for e in events_of(state, version) if e["event"] == "promoted"]
    return promoted[-1] if promoted else None


class JsonStore(Protocol):
    def get_json(self, key: str) -> Any: ...

    def put_json(self, key: str, payload: Any) -> None: ...


class Registry:
    """Reads and writes each adapter's registry document in an artifact store."""

    def __init__(self, store: JsonStore) -> None:
        self.store = store

    def read(self, adapter: str) -> dict[str, Any]:
        try:
            return self.store.get_json(registry_key(adapter))
        except ArtifactMissing:
            return empty()

    def champion(self, adapter: str) -> dict[str, Any] | None:
        return champion_of(self.read(adapter))

    def promote(self, adapter: str, version: str, prefix: str, why: str,
                scores: dict[str, Any], who: str | None = None) -> dict[str, Any]:
        state = self.read(adapter)
        entry = {"event": "promoted", "version": version, "prefix": prefix,
                 "who": who or getpass.getuser(), "when": time.time(), "why": why,
                 "scores": scores, "previous": (champion_of(state) or {}).get("version")}
        state["champion"] = entry
        state["history"].append(entry)
        self.store.put_json(registry_key(adapter), state)
        return entry

    def mark_erased(self, adapter: str, versions: list[str], erasure: str) -> None:
        state = self.read(adapter)
        marks = state.setdefault("erased", {})
        for version in versions:
            marks[version] = sorted({*marks.get(version, []), erasure})
        self.store.put_json(registry_key(adapter), state)

    def unpublish(self, adapter: str, why: str, who: str | None = None) -> None:
        """No champion: deployments stop serving the adapter at their next materialization."""
        state = self.read(adapter)
        previous = (champion_of(state) or {}).get("version")
        state["champion"] = None
        state["history"].append({"event": "unpublished", "version": previous, "when": time.time(),
                                 "who": who or getpass.getuser(), "why": why})
        self.store.put_json(registry_key(adapter), state)

    def record_rejection(self, adapter: str, version: str, why: str, who: str | None = None
                         ) -> None:
        state = self.read(adapter)
        state["history"].append({"event": "rejected", "version": version, "when": time.time(),
                                 "who": who or getpass.getuser(), "why": why})
        self.store.put_json(registry_key(adapter), state)
