"""What a deployment asks of any vLLM replica over HTTP, wherever it runs: which versions it
serves, and to serve the promoted ones.

Every replica runs the object store's LoRA resolver (replica/resolver.py), which downloads a
promoted version and verifies every file before vLLM reads it, so nothing is ever copied to a
replica. To serve a version, a deployment asks the replica for `<adapter>@<version>` (the resolver
pulls exactly that version, or the request fails with the reason in the replica's log while the
version already loaded keeps serving), then loads it in place under the adapter's plain name and
drops the pinned alias. The same calls refresh a local process, a server on another host, or a
pod behind a Service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class AdapterToServe:
    """A promoted adapter (or a mixture) version, pulled by the replica's resolver."""

    name: str
    version: str
    rank: int


@dataclass(frozen=True)
class LoraStore:
    """The object store a replica's resolver pulls adapters from."""

    url: str  # file://<absolute folder> or s3://bucket/prefix
    endpoint_url: str | None = None  # an S3-compatible server


def listing(url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/models", timeout=10, headers=headers)
    response.raise_for_status()
    return response.json()["data"]


def versions(url: str, headers: dict[str, str] | None = None) -> dict[str, str | None]:
    """Every served model -> the version it answers with (None for the base model): the
    resolver keeps each version in a folder named after it (`<cache>/<adapter>/<version>`),
    which vLLM lists as the adapter's root."""
    return {m["id"]: Path(m["root"]).name if m.get("parent") else None
            for m in listing(url, headers)}


def verify(url: str, base_model: str, adapters: list[AdapterToServe],
           headers: dict[str, str] | None = None) -> list[str]:
    """The replica's models, once it is seen serving the base model and exactly the declared
    version of every adapter; raises naming what differs."""
    served = versions(url, headers)
    wrong = {a.name: served.get(a.name, "missing") for a in adapters
             if served.get(a.name) != a.version}
    if base_model not in served or wrong:
        raise RuntimeError(f"vLLM at {url} does not serve what was declared: base "
                           f"{base_model} {'listed' if base_model in served else 'missing'}, "
                           f"adapters not at their promoted version: {wrong}")
    return sorted(served)


def sync(url: str, served: dict[str, str], adapters: list[AdapterToServe], log: Any,
         headers: dict[str, str] | None = None) -> list[str]:
    """From `served` (adapter -> version) to `adapters`: unload what is no longer declared,
    pull each declared version not served yet; returns what was done."""
    wanted = {a.name for a in adapters}
    actions = []
    for name in sorted(set(served) - wanted):
        _post(url, "unload_lora_adapter", {"lora_name": name}, headers)
        actions.append(f"unloaded {name}")
    for adapter in adapters:
        if served.get(adapter.name) != adapter.version:
            pull(url, adapter, headers)
            actions.append(f"pulled {adapter.name}@{adapter.version[:12]}")
    for action in actions:
        log.info(f"{url}: {action}")
    return actions


def pull(url: str, adapter: AdapterToServe, headers: dict[str, str] | None = None) -> None:
    """`<adapter>@<version>` through the resolver, then in place under the plain name (so the
    name answers throughout), then the pinned alias is dropped."""
    pinned = f"{adapter.name}@{adapter.version}"
    response = httpx.post(f"{url}/v1/completions", timeout=300, headers=headers, json={
        "model": pinned, "prompt": "ping", "max_tokens": 1})
    if response.status_code != 200:
        raise RuntimeError(
            f"replica {url} could not pull {pinned} from the object store "
            f"({response.status_code}: {response.text[:300]}); its resolver logs why "
            "('refusing LoRA adapter ...') in the replica's log")
    folder = next(m["root"] for m in listing(url, headers) if m["id"] == pinned)
    _post(url, "load_lora_adapter", {"lora_name": adapter.name, "lora_path": folder,
                                     "load_inplace": True}, headers)
    _post(url, "unload_lora_adapter", {"lora_name": pinned}, headers)


def _post(url: str, route: str, body: dict[str, Any], headers: dict[str, str] | None) -> None:
    response = httpx.post(f"{url}/v1/{route}", json=body, timeout=120, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"vLLM {route} {body} -> {response.status_code}: {response.text}")
