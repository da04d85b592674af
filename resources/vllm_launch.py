"""One definition of how a deployment launches vLLM, rendered for every place it can run.

The local server (resources/vllm_server.py) and the GPU renderings (a Kubernetes manifest, a
`docker run` script, an EC2 user-data bootstrap) take their flags from `server_args`, so what is
tested here is what a GPU host runs. On GPU hosts the artifacts come from the S3 object store,
synced by content-addressed prefix before the server starts (vLLM cannot read S3 itself).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import yaml

# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_limit(ranks: list[int]) -> int:
    needed = max(ranks, default=8)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= needed:
            return allowed
    raise ValueError(f"adapter rank {needed} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


def server_args(*, model: str, served_name: str, host: str, port: int, dtype: str,
                max_model_len: int, max_loras: int, ranks: list[int],
                extra_args: list[str]) -> list[str]:
    """max_loras 0 serves the base model alone: a LoRA-enabled vLLM is slower even for requests
    that use no adapter (bench/serving_throughput.py measures both)."""
    if max_loras == 0 and ranks:
        raise ValueError(f"max_loras is 0 but {len(ranks)} adapter(s) are to be served")
    lora = ["--enable-lora", "--max-lora-rank", str(lora_rank_limit(ranks)),
            "--max-loras", str(max_loras)] if max_loras else []
    return [
        "--model", model, "--served-model-name", served_name,
        "--host", host, "--port", str(port), "--dtype", dtype,
        "--max-model-len", str(max_model_len), "--max-num-seqs", "32", *lora, *extra_args,
    ]


@dataclass(frozen=True)
class Artifact:
    name: str
    uri: str  # s3://bucket/prefix/<kind>/<name>/<version>
    version: str
    rank: int = 0

    @property
    def mount(self) -> str:
        return f"/models/{self.name}-{self.version[:12]}"


@dataclass(frozen=True)
class GpuLaunch:
    deployment: str
    base: Artifact
    adapters: list[Artifact]
    max_model_len: int
    max_loras: int
    extra_args: list[str]
    image: str = "vllm/vllm-openai:v0.11.0"
    port: int = 8000
    gpus: int = 1

    def args(self) -> list[str]:
        args = server_args(model=self.base.mount, served_name=self.base.name, host="0.0.0.0",
                           port=self.port, dtype="auto", max_model_len=self.max_model_len,
                           max_loras=self.max_loras, ranks=[a.rank for a in self.adapters],
                           extra_args=self.extra_args)
        if self.adapters:
            args += ["--lora-modules", *(f"{a.name}={a.mount}" for a in self.adapters)]
        return args

    def sync_commands(self) -> list[str]:
        return [f"aws s3 sync {shlex.quote(a.uri)} {shlex.quote(a.mount)} --exclude "
                "'_MANIFEST.json'" for a in [self.base, *self.adapters]]

    # -- renderings -----------------------------------------------------------------------------
    def kubernetes(self) -> str:
        labels = {"app": f"vllm-{self.deployment}"}
        volume = {"name": "models", "mountPath": "/models"}
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"vllm-{self.deployment}", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [{
                        "name": "sync-artifacts", "image": "amazon/aws-cli:2.17.0",
                        "command": ["/bin/sh", "-c", " && ".join(self.sync_commands())],
                        "volumeMounts": [volume],
                    }],
                    "containers": [{
                        "name": "vllm", "image": self.image, "args": self.args(),
                        "env": [{"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"},
                                {"name": "HF_HUB_OFFLINE", "value": "1"}],
                        "ports": [{"containerPort": self.port}],
                        "resources": {"limits": {"nvidia.com/gpu": self.gpus}},
                        "readinessProbe": {"httpGet": {"path": "/health", "port": self.port},
                                           "periodSeconds": 10},
                        "volumeMounts": [volume],
                    }],
                    "volumes": [{"name": "models", "emptyDir": {}}],
                },
            }},
        }
        service = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": f"vllm-{self.deployment}"},
                   "spec": {"selector": labels, "ports": [{"port": self.port}]}}
        return yaml.safe_dump_all([deployment, service], sort_keys=False)

    def docker_script(self) -> str:
        run = ["docker", "run", "-d", "--name", f"vllm-{self.deployment}", "--gpus", "all",
               "-p", f"{self.port}:{self.port}", "-v", "/models:/models",
               "-e", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "-e", "HF_HUB_OFFLINE=1",
               self.image, *self.args()]
        return "\n".join(["#!/usr/bin/env bash", "set -euo pipefail", *self.sync_commands(),
                          shlex.join(run), ""])

    def ec2_user_data(self) -> str:
        """For a GPU AMI with Docker and the NVIDIA toolkit (e.g. the AWS Deep Learning AMI)."""
        return self.docker_script().replace(
            "set -euo pipefail\n", "set -euo pipefail\nexec > /var/log/vllm-bootstrap.log 2>&1\n"
            "systemctl start docker\nmkdir -p /models\n", 1)
