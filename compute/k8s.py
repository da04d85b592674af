"""A Kubernetes Job with a GPU request per training job: its settings and its launcher (the
official client). The worker image runs `python -m worker.remote` with the job's environment.

The Job has no retries of its own (Dagster's retry policy decides, and resumes from the
checkpoints), a deadline equal to the run's max runtime, and is deleted with its pods when the
job ends, fails or the run is cancelled.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import Field, field_validator

from compute.gpus import GpuBox, gpu_named
from compute.machine import Job, Launcher, RemoteSpec

LABEL = "app.kubernetes.io/name"


class K8sLauncher(Launcher):
    spec: K8sSpec

    def batch(self) -> Any:
        if "batch" not in self._clients:
            from kubernetes import client, config

            if self.spec.api_url:
                configuration = client.Configuration()
                configuration.host = self.spec.api_url
                api = client.ApiClient(configuration)
            elif config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
                config.load_incluster_config()
                api = client.ApiClient()
            else:
                api = config.new_client_from_config(context=self.spec.kube_context)
            self._clients["batch"] = client.BatchV1Api(api)
        return self._clients["batch"]

    def manifest(self, job: Job) -> dict[str, Any]:
        spec = self.spec
        name = re.sub(r"[^a-z0-9-]+", "-", f"factory-{job.name}-{job.step}".lower())[:44]
        name = f"{name.strip('-')}-{job.run_id[:8]}-{job.attempt}"
        labels = {LABEL: "adapter-factory-worker", "dagster/run-id": job.run_id}
        container: dict[str, Any] = {
            "name": "worker", "image": spec.worker_image,
            "command": ["python", "-m", "worker.remote"],
            "env": [{"name": k, "value": v} for k, v in sorted(job.env.items())],
        }
        if spec.gpus:
            container["resources"] = {"limits": {"nvidia.com/gpu": str(spec.gpus)}}
        pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if spec.service_account:
            pod["serviceAccountName"] = spec.service_account
        if spec.node_selector:
            pod["nodeSelector"] = spec.node_selector
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": job.max_runtime_s,
                     "ttlSecondsAfterFinished": 3600,
                     "template": {"metadata": {"labels": labels}, "spec": pod}},
        }

    def launch(self, job: Job) -> str:
        body = self.manifest(job)
        self.batch().create_namespaced_job(namespace=self.spec.namespace, body=body)
        return f"job {self.spec.namespace}/{body['metadata']['name']}"

    def gone(self, machine: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        name = machine.split("/")[-1]
        try:
            status = self.batch().read_namespaced_job_status(name, self.spec.namespace).status
        except ApiException as exc:
            if exc.status == 404:
                return "was deleted"
            raise
        if status is not None and status.failed:
            return "failed (kubectl logs job/" + name + ")"
        if status is not None and status.succeeded:
            return "completed"
        return None

    def release(self, machine: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch().delete_namespaced_job(machine.split("/")[-1], self.spec.namespace,
                                               propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise


class K8sSpec(RemoteSpec):
    """A Kubernetes Job with a GPU request per training job, deleted when it ends."""

    kind = "k8s"
    launcher = K8sLauncher

    namespace: str = "default"
    gpus: int = Field(1, ge=0)
    gpu_model: str | None = Field(
        None, description="the card the node selector gets (a name in compute/gpus.py, e.g. "
                          "H100-80GB), for the memory check before the Job is created")
    service_account: str | None = Field(
        None, description="e.g. an IRSA/Workload Identity account that may use staging_url")
    node_selector: dict[str, str] = Field(default_factory=dict)
    kube_context: str | None = Field(None, description="kubeconfig context (default: in-cluster "
                                                       "config inside a pod, else current)")
    api_url: str | None = Field(None, description="talk to this API URL without credentials "
                                                  "(`kubectl proxy`, tests)")

    @field_validator("gpu_model")
    @classmethod
    def _known_card(cls, name: str | None) -> str | None:
        if name is not None:
            gpu_named(name)
        return name

    def gpu_box(self) -> GpuBox | None:
        return GpuBox(gpu_named(self.gpu_model), self.gpus) if self.gpu_model else None
