"""A deployment's vLLM replicas on Kubernetes (`target: kubernetes`), through the official client:
apply the API key Secret, the Deployment, Service and NetworkPolicy that resources/vllm_launch.py
renders, wait for the rollout, list the ready pods (which the deployment then refreshes one by one
over the pod network), and delete what was applied.

Applying is create-or-patch, so a materialization is idempotent; a changed pod template (base
model, image, flags) rolls out one pod at a time (the rendering's RollingUpdate strategy) and a
changed replica count scales. Objects the deployment creates carry `app.kubernetes.io/managed-by:
adapter-factory`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from config.deployments import KubernetesTarget

MANAGED = {"app.kubernetes.io/managed-by": "adapter-factory"}


class RolloutTimeout(RuntimeError):
    pass


class Cluster:
    def __init__(self, target: KubernetesTarget) -> None:
        self.target = target
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            from kubernetes import client, config

            if self.target.api_url:
                configuration = client.Configuration()
                configuration.host = self.target.api_url
                self._client = client.ApiClient(configuration)
            elif config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
                config.load_incluster_config()
                self._client = client.ApiClient()
            else:
                self._client = config.new_client_from_config(context=self.target.kube_context)
        return self._client

    def _calls(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any],
                                         Callable[..., Any]]:
        """(create, patch, delete) of one kind of object."""
        from kubernetes import client

        api = self._api()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        network = client.NetworkingV1Api(api)
        return {
            "Deployment": (apps.create_namespaced_deployment, apps.patch_namespaced_deployment,
                           apps.delete_namespaced_deployment),
            "Service": (core.create_namespaced_service, core.patch_namespaced_service,
                        core.delete_namespaced_service),
            "Secret": (core.create_namespaced_secret, core.patch_namespaced_secret,
                       core.delete_namespaced_secret),
            "NetworkPolicy": (network.create_namespaced_network_policy,
                              network.patch_namespaced_network_policy,
                              network.delete_namespaced_network_policy),
        }[kind]

    def apply(self, obj: dict[str, Any]) -> str:
        """Create the object, or patch it to this state when it exists; says which."""
        from kubernetes.client.exceptions import ApiException

        obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), **MANAGED}
        create, patch, _ = self._calls(obj["kind"])
        name, namespace = obj["metadata"]["name"], self.target.namespace
        try:
            create(namespace=namespace, body=obj)
            return f"created {obj['kind']} {name}"
        except ApiException as exc:
            if exc.status != 409:
                raise
        patch(name=name, namespace=namespace, body=obj)
        return f"patched {obj['kind']} {name}"

    def wait_for_rollout(self, name: str, replicas: int, log: Any) -> None:
        """Until the Deployment's controller has seen the latest spec and `replicas` pods of it
        are ready (`kubectl rollout status`)."""
        from kubernetes import client

        apps = client.AppsV1Api(self._api())
        deadline = time.monotonic() + self.target.rollout_timeout_s
        while True:
            found = apps.read_namespaced_deployment_status(name, self.target.namespace)
            status = found.status
            done = ((status.observed_generation or 0) >= (found.metadata.generation or 0)
                    and (status.updated_replicas or 0) == replicas
                    and (status.ready_replicas or 0) == replicas
                    and (status.replicas or 0) == replicas)
            if done:
                return
            if time.monotonic() > deadline:
                raise RolloutTimeout(
                    f"deployment {self.target.namespace}/{name}: {status.ready_replicas or 0} of "
                    f"{replicas} replicas ready after {self.target.rollout_timeout_s}s "
                    f"(kubectl -n {self.target.namespace} describe deployment {name})")
            log.info(f"{name}: {status.ready_replicas or 0}/{replicas} replicas ready")
            time.sleep(2)

    def pod_urls(self, name: str) -> list[str]:
        """Each ready pod behind the Service, as http://<pod ip>:<its port>."""
        from kubernetes import client

        endpoints = client.CoreV1Api(self._api()).read_namespaced_endpoints(
            name, self.target.namespace)
        return sorted(f"http://{address.ip}:{subset.ports[0].port}"
                      for subset in endpoints.subsets or [] for address in subset.addresses or [])

    def delete(self, name: str) -> list[str]:
        """Remove the deployment's Deployment, Service and NetworkPolicy (the shared API key
        Secret stays); returns what was there."""
        from kubernetes.client.exceptions import ApiException

        deleted = []
        for kind in ("Deployment", "Service", "NetworkPolicy"):
            try:
                self._calls(kind)[2](name=name, namespace=self.target.namespace)
                deleted.append(f"{kind} {name}")
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return deleted


def api_key_secret(name: str, key: str) -> dict[str, Any]:
    """The Secret vLLM reads its `--api-key` from (VLLM_API_KEY), holding the key the gateway
    sends (gateway.upstream_api_key_env)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name}, "stringData": {"api-key": key}}
