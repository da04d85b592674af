"""The few Kubernetes API routes a deployment uses (Deployments, Services, Secrets,
NetworkPolicies, Endpoints), on 127.0.0.1: every request is recorded with its body, objects are
kept and patched, a Deployment becomes ready one poll after each change (so a rollout is waited
for), and its Endpoints list `pods` (the address:port of a real server standing in for each pod).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from tests.support.recording_api import RecordingServer

ROUTE = re.compile(r"^/(?:api/v1|apis/apps/v1|apis/networking\.k8s\.io/v1)/namespaces/"
                   r"(?P<ns>[^/]+)/(?P<kind>[a-z]+)(?:/(?P<name>[^/]+))?(?P<status>/status)?$")


class FakeKubernetes(RecordingServer):
    def __init__(self, pods: list[tuple[str, int]]) -> None:
        super().__init__()
        self.pods = pods
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.polls_until_ready = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def sent(self, method: str, kind: str) -> list[Any]:
        return [body for m, path, body in self.requests
                if m == method and f"/{kind}" in path.split("?")[0]]

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        match = ROUTE.match(path)
        if match is None:
            return 404, {"kind": "Status", "code": 404}
        kind, name = match["kind"], match["name"]
        if kind == "endpoints":
            return 200, {"kind": "Endpoints", "metadata": {"name": name}, "subsets": [
                {"addresses": [{"ip": ip}], "ports": [{"port": port}]} for ip, port in self.pods]}
        key = (kind, name or body["metadata"]["name"])
        if method == "POST":
            if key in self.objects:
                return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
            self.objects[key] = {**body, "metadata": {**body["metadata"], "generation": 1}}
            self.polls_until_ready = 1
            return 201, self.objects[key]
        if key not in self.objects:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        if method == "PATCH":
            generation = self.objects[key]["metadata"]["generation"] + 1
            self.objects[key] = {**body, "metadata": {**body["metadata"],
                                                      "generation": generation}}
            self.polls_until_ready = 1
            return 200, self.objects[key]
        if method == "DELETE":  # as the API answers: the Service itself, a Status otherwise
            deleted = self.objects.pop(key)
            return 200, deleted if kind == "services" else {"kind": "Status",
                                                            "status": "Success"}
        found = self.objects[key]
        if match["status"] and kind == "deployments":
            replicas = found["spec"]["replicas"]
            ready = 0 if self.polls_until_ready else replicas
            self.polls_until_ready = max(0, self.polls_until_ready - 1)
            found = {**found, "status": {
                "observedGeneration": found["metadata"]["generation"], "replicas": replicas,
                "updatedReplicas": replicas, "readyReplicas": ready}}
        return 200, found
