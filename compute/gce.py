"""A Compute Engine GPU instance per training job: its settings and its launcher (the Compute
Engine REST API with Application Default Credentials).

The instance's startup-script is infra/remote/bootstrap.sh with the job's environment exported
above it; it powers off at the end, its scheduling stops it after the run's max runtime, and the
launcher deletes it (with its boot disk) when the job ends, fails or the run is cancelled.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from compute.gpus import GpuBox, gce_box
from compute.machine import Job, Launcher, LaunchError, RemoteSpec, bootstrap_script

GONE = ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED")
API = "https://compute.googleapis.com"


class GceLauncher(Launcher):
    spec: GceSpec

    def session(self) -> Any:
        if "gce" not in self._clients:
            import google.auth
            from google.auth.credentials import AnonymousCredentials
            from google.auth.transport.requests import AuthorizedSession

            credentials = AnonymousCredentials() if self.spec.api_url else google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"])[0]
            self._clients["gce"] = AuthorizedSession(credentials)
        return self._clients["gce"]

    def instances(self, name: str = "") -> str:
        spec = self.spec
        url = f"{spec.api_url or API}/compute/v1/projects/{spec.project}/zones/{spec.zone}"
        return f"{url}/instances" + (f"/{name}" if name else "")

    def call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.session().request(method, url, timeout=60, **kwargs)
        if response.status_code >= 400 and response.status_code != 404:
            detail = response.json().get("error", {}).get("message", response.text) \
                if response.headers.get("content-type", "").startswith("application/json") \
                else response.text
            raise LaunchError(f"Compute Engine {method} {url}: {response.status_code} {detail}")
        return response

    def instance_body(self, job: Job) -> dict[str, Any]:
        spec, env = self.spec, job.env
        if spec.hmac_secret:
            env = {**env, "FACTORY_HMAC_SECRET": spec.hmac_secret}
        body: dict[str, Any] = {
            "name": f"factory-{job.name}-{job.run_id[:8]}-{job.attempt}",
            "machineType": f"zones/{spec.zone}/machineTypes/{spec.machine_type}",
            "labels": {"app": "adapter-factory-worker", "dagster-run-id": job.run_id},
            "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                           "instanceTerminationAction": "DELETE",
                           "maxRunDuration": {"seconds": str(job.max_runtime_s)}},
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": {
                "sourceImage": spec.image, "diskSizeGb": str(spec.disk_gib)}}],
            "networkInterfaces": [{"network": spec.network,
                                   "accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}],
            "metadata": {"items": [{"key": "startup-script", "value": bootstrap_script(
                env, spec.worker_command, spec.worker_image)}]},
        }
        if spec.accelerator:
            body["guestAccelerators"] = [{
                "acceleratorType": f"zones/{spec.zone}/acceleratorTypes/{spec.accelerator}",
                "acceleratorCount": spec.accelerator_count}]
        if spec.service_account:
            body["serviceAccounts"] = [{
                "email": spec.service_account,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
        return body

    def launch(self, job: Job) -> str:
        body = self.instance_body(job)
        self.call("POST", self.instances(), json=body)
        return f"gce instance {self.spec.zone}/{body['name']}"

    def gone(self, machine: str) -> str | None:
        response = self.call("GET", self.instances(machine.split("/")[-1]))
        if response.status_code == 404:
            return "was deleted"
        status = response.json().get("status", "")
        return f"is {status} (its log: /var/log/adapter-factory-worker.log)" \
            if status in GONE else None

    def release(self, machine: str) -> None:
        self.call("DELETE", self.instances(machine.split("/")[-1]))


class GceSpec(RemoteSpec):
    """A Compute Engine GPU instance per training job, deleted when it ends. Staging goes through
    Cloud Storage's S3-compatible XML API: staging_url s3://<gcs bucket>/<prefix>, endpoint_url
    https://storage.googleapis.com, an HMAC key here in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    and on the instance from Secret Manager (hmac_secret)."""

    kind = "gce"
    launcher = GceLauncher

    project: str
    zone: str = "us-central1-a"
    machine_type: str = "g2-standard-8"
    accelerator: str | None = Field("nvidia-l4", description="None for a CPU-only machine")
    accelerator_count: int = Field(1, ge=1)
    image: str = Field(description="a boot image with Docker, the NVIDIA driver and gcloud, e.g. "
                                   "projects/deeplearning-platform-release/global/images/family/"
                                   "common-cu124-debian-11")
    service_account: str | None = Field(None, description="the instance's identity; it must "
                                                          "read hmac_secret")
    network: str = "global/networks/default"
    hmac_secret: str | None = Field(None, description="Secret Manager secret holding "
                                                      "'<access id>:<secret>' of an HMAC key")
    disk_gib: int = Field(200, ge=20)
    worker_command: str | None = Field(
        None, description="what runs `-m worker.remote` on the box; default: docker run of "
                          "worker_image with the GPUs")
    api_url: str | None = Field(None, description="Compute Engine API root override (tests)")

    def gpu_box(self) -> GpuBox | None:
        return gce_box(self.accelerator, self.accelerator_count)
