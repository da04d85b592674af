"""A deployment as a GPU host runs it (Kubernetes pods, `factory render-deployment`'s docker
script and EC2 user data): the base model synced from the object store, champions pulled by the
replica's resolver."""

from assets.common import current
from assets.deployment_targets.rollout import what_to_serve
from config.schema import FactoryConfig
from resources.object_store import ObjectStore
from resources.vllm_launch import Artifact, GpuLaunch


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
