"""A Compute Engine GPU instance per training job (resources/remote_compute.py does the Pipes
and staging part), through the Compute Engine REST API with Application Default Credentials.

The instance's startup-script is infra/remote/bootstrap.sh with the job's environment exported
above it; it powers off at the end, its scheduling stops it after the run's max runtime, and the
launcher deletes it (with its boot disk) when the job ends, fails or the run is cancelled.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from resources.remote_compute import RemoteCompute

GONE = ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED")
API = "https://compute.googleapis.com"


class GceCompute(RemoteCompute):
    """Runs worker jobs on a fresh Compute Engine instance each (see config/schema.py GceSpec)."""

    # no defaults here: GceSpec's are the only ones (training_compute passes every field)
    project: str
    zone: str
    machine_type: str
    image: str
    accelerator: str | None
    accelerator_count: int
    service_account: str | None
    network: str
    hmac_secret: str | None
    disk_gib: int
    api_url: str | None

    def session(self) -> Any:
        if "gce" not in self._clients:
            import google.auth
            from google.auth.credentials import AnonymousCredentials
            from google.auth.transport.requests import AuthorizedSession

            credentials = AnonymousCredentials() if self.api_url else google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"])[0]
            self._clients["gce"] = AuthorizedSession(credentials)
        return self._clients["gce"]

    def instances(self, name: str = "") -> str:
        url = f"{self.api_url or API}/compute/v1/projects/{self.project}/zones/{self.zone}"
        return f"{url}/instances" + (f"/{name}" if name else "")

    def call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.session().request(method, url, timeout=60, **kwargs)
        if response.status_code >= 400 and response.status_code != 404:
            detail = response.json().get("error", {}).get("message", response.text) \
                if response.headers.get("content-type", "").startswith("application/json") \
                else response.text
            raise dg.Failure(f"Compute Engine {method} {url}: {response.status_code} {detail}")
        return response

    def instance_body(self, context: dg.AssetExecutionContext, job: str, env: dict[str, str]
                      ) -> dict[str, Any]:
        run_id = context.run.run_id
        if self.hmac_secret:
            env = {**env, "FACTORY_HMAC_SECRET": self.hmac_secret}
        body: dict[str, Any] = {
            "name": f"factory-{job}-{run_id[:8]}-{context.retry_number}",
            "machineType": f"zones/{self.zone}/machineTypes/{self.machine_type}",
            "labels": {"app": "adapter-factory-worker", "dagster-run-id": run_id},
            "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                           "instanceTerminationAction": "DELETE",
                           "maxRunDuration": {"seconds": str(self.max_runtime_s)}},
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": {
                "sourceImage": self.image, "diskSizeGb": str(self.disk_gib)}}],
            "networkInterfaces": [{"network": self.network,
                                   "accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}],
            "metadata": {"items": [{"key": "startup-script",
                                    "value": self.bootstrap_script(env)}]},
        }
        if self.accelerator:
            body["guestAccelerators"] = [{
                "acceleratorType": f"zones/{self.zone}/acceleratorTypes/{self.accelerator}",
                "acceleratorCount": self.accelerator_count}]
        if self.service_account:
            body["serviceAccounts"] = [{
                "email": self.service_account,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
        return body

    def launch(self, context: dg.AssetExecutionContext, job: str, env: dict[str, str]) -> str:
        body = self.instance_body(context, job, env)
        self.call("POST", self.instances(), json=body)
        return f"gce instance {self.zone}/{body['name']}"

    def gone(self, machine: str) -> str | None:
        response = self.call("GET", self.instances(machine.split("/")[-1]))
        if response.status_code == 404:
            return "was deleted"
        status = response.json().get("status", "")
        return f"is {status} (its log: /var/log/adapter-factory-worker.log)" \
            if status in GONE else None

    def release(self, machine: str) -> None:
        self.call("DELETE", self.instances(machine.split("/")[-1]))
