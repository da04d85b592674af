"""The cluster install (infra/k8s/, docs/operations.md "Running on Kubernetes"): no cluster
runs here, so these check what would break an install: a manifest the API server would refuse, a
project file the factory would refuse, pods that cannot reach each other, a permission the
deployment asset lacks, a Secret or chart version the documented commands do not match."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from config.deployments import KubernetesTarget
from config.loading import load_config
from resources.kubernetes_replicas import Cluster, api_key_secret
from resources.vllm_launch import PLATFORM_LABEL, Artifact, GpuLaunch, replica_image
from tests.support.fake_kubernetes import FakeKubernetes

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
VALUES = yaml.safe_load((K8S / "dagster-values.yaml").read_text())
USER_CODE = VALUES["dagster-user-deployments"]["deployments"][0]
PROJECT = load_config(K8S / "factory.yaml")


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, as `kubectl apply -k infra/k8s` would send it."""
    found = {}
    for file in KUSTOMIZATION["resources"]:
        for obj in yaml.safe_load_all((K8S / file).read_text()):
            obj["metadata"].setdefault("namespace", KUSTOMIZATION["namespace"])
            found[obj["kind"], obj["metadata"]["name"]] = obj
    return found


OBJECTS = manifests()


def pod_template(kind: str, name: str) -> dict[str, Any]:
    return OBJECTS[kind, name]["spec"]["template"]


def test_every_manifest_is_one_the_api_server_accepts() -> None:
    listed = set(KUSTOMIZATION["resources"])
    not_manifests = {"kustomization.yaml", "dagster-values.yaml", "factory.yaml"}
    assert listed == {p.name for p in K8S.glob("*.yaml")} - not_manifests  # none forgotten
    for obj in OBJECTS.values():
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    assert KUSTOMIZATION["configMapGenerator"][0]["files"] == ["factory.yaml"]


def test_the_cluster_project_file_loads_and_names_the_clusters_services() -> None:
    """A misspelt Service name or port is a gateway that cannot rate-limit or a RAG index
    nobody can reach; the project file is checked against the manifests it sits beside."""
    namespace = KUSTOMIZATION["namespace"]
    assert PROJECT.storage.object_store.startswith("s3://")
    chroma = OBJECTS["Service", "adapter-factory-chroma"]
    assert PROJECT.storage.chroma_url == (f"http://{chroma['metadata']['name']}:"
                                          f"{chroma['spec']['ports'][0]['port']}")
    redis = OBJECTS["Service", "adapter-factory-redis"]
    assert PROJECT.gateway.rate_limit_backend.startswith(
        f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/")
    for name, spec in PROJECT.deployments.items():
        assert spec.target == "kubernetes", name
        assert spec.kubernetes.namespace == namespace
        # the replica image at the serving pin, in the same registry as the project's
        registry, image = spec.kubernetes.image.rsplit("/", 1)
        assert image == replica_image() and USER_CODE["image"]["repository"].startswith(registry)
    assert PROJECT.compute.k8s.namespace == namespace
    assert ("ServiceAccount", PROJECT.compute.k8s.service_account) in OBJECTS
    # the pools training queues in hold compute.concurrency runs, as `factory` sets them locally
    assert VALUES["concurrency"]["pools"]["defaultLimit"] == PROJECT.compute.concurrency
    # the file is where FACTORY_CONFIG says, work_dir is writable, in every pod that reads it
    gateway = pod_template("Deployment", "adapter-factory-gateway")["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in USER_CODE["env"]}
    for mounts in (gateway["volumeMounts"], USER_CODE["volumeMounts"]):
        paths = {m["mountPath"]: m for m in mounts}
        assert Path(env["FACTORY_CONFIG"]).parent.as_posix() in paths
        assert str(PROJECT.work_dir) in paths and not paths[str(PROJECT.work_dir)].get("readOnly")
    assert gateway["command"][:3] == ["factory-gateway", "--config", env["FACTORY_CONFIG"]]


def test_only_the_platforms_pods_reach_the_replicas_chroma_and_redis() -> None:
    label, value = PLATFORM_LABEL
    gateway = pod_template("Deployment", "adapter-factory-gateway")["metadata"]["labels"]
    assert gateway[label] == value
    assert USER_CODE["labels"][label] == value  # the code location
    assert VALUES["runLauncher"]["config"]["k8sRunLauncher"]["labels"][label] == value  # runs
    launch = GpuLaunch("support", Artifact("base", "s3://b/base/v1", "v1"), "s3://b", [16], 512,
                       4, [])
    replica_policy = launch.kubernetes_objects()[2]
    chroma_policy = OBJECTS["NetworkPolicy", "adapter-factory-chroma"]
    for policy in (replica_policy, chroma_policy):
        assert policy["spec"]["ingress"][0]["from"] == [
            {"podSelector": {"matchLabels": {label: value}}}]
    redis_policy = OBJECTS["NetworkPolicy", "adapter-factory-redis"]
    (selector,) = redis_policy["spec"]["ingress"][0]["from"]
    assert selector["podSelector"]["matchLabels"].items() <= gateway.items()
    # each policy guards the pods it is named after
    for name in ("adapter-factory-chroma", "adapter-factory-redis"):
        guarded = OBJECTS["NetworkPolicy", name]["spec"]["podSelector"]["matchLabels"]
        kind = "StatefulSet" if "chroma" in name else "Deployment"
        assert guarded.items() <= pod_template(kind, name)["metadata"]["labels"].items()


def rbac_of(method: str, path: str) -> tuple[str, str, str]:
    """(API group, resource, verb) of one request, as the API server authorizes it."""
    match = re.match(r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)/namespaces/[^/]+/(?P<res>[a-z]+)"
                     r"(?:/[^/]+)?(?P<sub>/status)?$", path.split("?")[0])
    assert match, path
    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "GET": "get"}
    return match["group"] or "", match["res"] + (match["sub"] or ""), verbs[method]


def test_the_control_planes_role_allows_exactly_what_a_kubernetes_deployment_does() -> None:
    """The deployment asset's calls (apply, rollout wait, pod addresses) and `factory stop`'s
    (delete), recorded, against the Role the control plane's service account is bound to: a
    missing rule is a 403 mid-deployment, an extra one a permission nobody needs."""
    api = FakeKubernetes(pods=[("10.1.0.7", 8000)])
    cluster = Cluster(KubernetesTarget(api_url=api.url, namespace="adapter-factory"))
    launch = GpuLaunch("support", Artifact("base", "s3://b/base/v1", "v1"), "s3://b", [16], 512,
                       4, [], namespace="adapter-factory")
    for obj in [api_key_secret(launch.api_key_secret, "key"), *launch.kubernetes_objects()]:
        cluster.apply(obj)
        cluster.apply(obj)  # a second materialization patches
    cluster.wait_for_rollout(launch.name, 1, logging.getLogger("test"))
    cluster.pod_urls(launch.name)
    cluster.delete(launch.name)
    used = {rbac_of(method, path) for method, path, _ in api.requests}
    role = OBJECTS["Role", "adapter-factory-replicas"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert used - granted == set()
    assert granted - used == set()
    binding = OBJECTS["RoleBinding", "adapter-factory-replicas"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "adapter-factory",
                                    "namespace": KUSTOMIZATION["namespace"]}]
    assert VALUES["global"]["serviceAccountName"] == "adapter-factory"


def test_the_readmes_commands_install_what_the_manifests_expect() -> None:
    """Every Secret a pod reads is one docs/operations.md creates; the chart version is the Dagster
    library's; the code location is this project's."""
    readme = (ROOT / "docs" / "operations.md").read_text()
    section = readme[readme.index("## Running on Kubernetes"):]
    section = section[:section.index("\n## ", 3)]
    created = set(re.findall(r"create secret generic (\S+)", section))
    gateway = pod_template("Deployment", "adapter-factory-gateway")["spec"]["containers"][0]
    read = {s["secretRef"]["name"] for s in gateway["envFrom"]}
    read |= {s["name"] for s in USER_CODE["envSecrets"]}
    read.add(VALUES["global"]["postgresqlSecretName"])
    assert created == read
    pins = dict(line.split("==") for line in (ROOT / "infra/requirements/factory.txt")
                .read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert f"--version {pins['dagster']}" in section
    assert f"--version {pins['dagster']}" in (K8S / "dagster-values.yaml").read_text()
    assert "kubectl apply -k infra/k8s" in section
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert USER_CODE["codeServerArgs"] == ["--module-name", module]
    # one image for the code location and the gateway
    (image,) = KUSTOMIZATION["images"]
    gateway_image = pod_template("Deployment", "adapter-factory-gateway")["spec"]["containers"][0]
    assert gateway_image["image"] == image["name"]
    assert (image["newName"], image["newTag"]) == (USER_CODE["image"]["repository"],
                                                   USER_CODE["image"]["tag"])


def test_the_images_environment_setup_commands_succeed_one_environment_at_a_time() -> None:
    """The control-plane image builds its environments one by one (`setup-envs.sh factory`);
    each such call must exit 0 (a job for an environment not asked for once made it exit 1,
    which would have failed `docker build`). The environments exist here, so each is a check
    of its stamp."""
    dockerfile = (ROOT / "infra" / "docker" / "factory.Dockerfile").read_text()
    asked = re.findall(r"\./infra/setup-envs\.sh (\w+)", dockerfile)
    assert asked == ["factory", "train"]
    for name in asked:
        done = subprocess.run([str(ROOT / "infra" / "setup-envs.sh"), name], capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"[setup] {name}:" in done.stdout
