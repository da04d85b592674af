"""A Kubernetes Job with a GPU request per training job (resources/remote_compute.py does the
Pipes and S3 part): the worker image runs `python -m worker.remote` with the job's environment.

The Job has no retries of its own (Dagster's retry policy decides, and resumes from the
checkpoints), a deadline equal to the run's max runtime, and is deleted with its pods when the
job ends, fails or the run is cancelled.
"""

from __future__ import annotations

import os
import re
from typing import Any

import dagster as dg

from resources.remote_compute import RemoteCompute

LABEL = "app.kubernetes.io/name"


class K8sCompute(RemoteCompute):
    """Runs worker jobs as Kubernetes Jobs (see config/schema.py K8sSpec)."""

    # no defaults here: K8sSpec's are the only ones (training_compute passes every field)
    namespace: str
    gpus: int
    service_account: str | None
    node_selector: dict[str, str]
    kube_context: str | None
    api_url: str | None

    def batch(self) -> Any:
        if "batch" not in self._clients:
            from kubernetes import client, config

            if self.api_url:
                configuration = client.Configuration()
                configuration.host = self.api_url
                api = client.ApiClient(configuration)
            elif config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
                config.load_incluster_config()
                api = client.ApiClient()
            else:
                api = config.new_client_from_config(context=self.kube_context)
            self._clients["batch"] = client.BatchV1Api(api)
        return self._clients["batch"]

    def manifest(self, context: dg.AssetExecutionContext, job: str, env: dict[str, str]
                 ) -> dict[str, Any]:
        step = context.op_execution_context.op_handle.name
        name = re.sub(r"[^a-z0-9-]+", "-", f"factory-{job}-{step}".lower())[:44].strip("-")
        name = f"{name}-{context.run.run_id[:8]}-{context.retry_number}"
        labels = {LABEL: "adapter-factory-worker", "dagster/run-id": context.run.run_id}
        container: dict[str, Any] = {
            "name": "worker", "image": self.worker_image,
            "command": ["python", "-m", "worker.remote"],
            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        }
        if self.gpus:
            container["resources"] = {"limits": {"nvidia.com/gpu": str(self.gpus)}}
        pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if self.service_account:
            pod["serviceAccountName"] = self.service_account
        if self.node_selector:
            pod["nodeSelector"] = self.node_selector
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": self.max_runtime_s,
                     "ttlSecondsAfterFinished": 3600,
                     "template": {"metadata": {"labels": labels}, "spec": pod}},
        }

    def launch(self, context: dg.AssetExecutionContext, job: str, env: dict[str, str]) -> str:
        body = self.manifest(context, job, env)
        self.batch().create_namespaced_job(namespace=self.namespace, body=body)
        return f"job {self.namespace}/{body['metadata']['name']}"

    def gone(self, machine: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        name = machine.split("/")[-1]
        try:
            status = self.batch().read_namespaced_job_status(name, self.namespace).status
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
            self.batch().delete_namespaced_job(machine.split("/")[-1], self.namespace,
                                               propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise
