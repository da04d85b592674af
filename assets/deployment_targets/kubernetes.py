"""`target: kubernetes`: a Deployment of `replicas` pods and its Service applied through the
Kubernetes API (resources/kubernetes_replicas.py), the rollout waited for, then every ready pod
refreshed like a host; the Service's URL is what the gateway reaches."""

import dataclasses
from typing import Any

import dagster as dg

from assets.deployment_targets.gpu_launch import gpu_launch
from assets.deployment_targets.hosts import refresh_host
from assets.deployment_targets.rollout import Rollout
from config.deployments import DeploymentSpec
from resources.kubernetes_replicas import Cluster, api_key_secret
from resources.vllm_launch import kubernetes_name
from resources.vllm_server import VLLMServer


class KubernetesTarget:
    name = "kubernetes"

    def where(self, spec: DeploymentSpec) -> str:
        return f"{spec.replicas} pods in namespace {spec.kubernetes.namespace}"

    def roll_out(self, rollout: Rollout) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        name, spec, log = rollout.name, rollout.spec, rollout.context.log
        key = rollout.config.gateway.upstream_api_key
        if not key:
            raise dg.Failure(
                f"deployment {name}: vLLM on Kubernetes only answers callers with its API key; "
                f"set {rollout.config.gateway.upstream_api_key_env} "
                "(gateway.upstream_api_key_env), which the gateway sends too; the deployment "
                "stores it in a Secret")
        target = spec.kubernetes
        launch = dataclasses.replace(
            gpu_launch(rollout.store, rollout.config, name, target.image),
            replicas=spec.replicas, namespace=target.namespace, gpus=target.gpus)
        cluster = Cluster(target)
        for obj in [api_key_secret(launch.api_key_secret, key), *launch.kubernetes_objects()]:
            log.info(cluster.apply(obj))
        cluster.wait_for_rollout(launch.name, spec.replicas, log)
        pods = cluster.pod_urls(launch.name)
        if len(pods) != spec.replicas:
            raise dg.Failure(f"deployment {name}: {len(pods)} ready pods behind Service "
                             f"{launch.name}, {spec.replicas} expected")
        refreshed = [refresh_host(url, spec.base_model, rollout.adapters, rollout.headers, log)
                     for url in pods]
        service = f"http://{launch.name}.{target.namespace}.svc:{launch.port}"
        return [{**refreshed[0], "url": service, "pods": refreshed}], {}

    def stop(self, name: str, spec: DeploymentSpec | None, vllm: VLLMServer) -> list[str]:
        assert spec is not None  # a deployment no longer declared is stopped as local
        deleted = Cluster(spec.kubernetes).delete(kubernetes_name(name))
        return [f"{name}: deleted {', '.join(deleted) or 'nothing (none was there)'}"]
