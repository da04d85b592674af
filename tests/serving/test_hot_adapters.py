"""Hot adapters: the policy reads the gateway's usage records, a deployment materialization
starts a replica with the hot adapter merged into its base (PEFT), that replica answers exactly
what the adapter answers through vLLM's LoRA path on greedy decoding, and removing the policy
stops it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import httpx
import pytest
from pydantic import ValidationError

from assets.hot_adapters import plan_merges
from config.deployments import DeploymentSpec, HotAdapters
from config.schema import FactoryConfig
from pipelines.graph import make_definitions, resources_for
from worker.batch_canary import replay

POLICY = HotAdapters(min_share=0.5, min_requests=10)


def traffic(**tokens: int) -> dict[str, dict[str, int]]:
    """Ten requests per model, with these generated tokens."""
    return {m: {"requests": 10, "completion_tokens": t} for m, t in tokens.items()}


def test_an_adapter_with_most_of_the_tokens_is_hot_and_the_table_says_why() -> None:
    load = traffic(**{"a": 800, "b": 100, "c": 50, "base": 50, "elsewhere": 10_000})
    decision = plan_merges(load, "base", ["a", "b", "c"], POLICY)
    assert decision.hot == ["a"]
    assert [(s.model, round(s.share, 2)) for s in decision.shares] == [
        ("a", 0.8), ("b", 0.1), ("base", 0.05), ("c", 0.05)]  # another deployment's: not counted
    assert "| a | 10 | 800 | 80% | yes |" in decision.markdown()


@pytest.mark.parametrize(("tokens", "why"), [
    ({"a": 340, "b": 330, "c": 330}, "no adapter generated 50%"),  # uniform: all through LoRA
    ({"base": 900, "a": 100}, "no adapter generated 50%"),  # the base model is not an adapter
])
def test_without_a_dominant_adapter_nothing_is_merged(tokens: dict[str, int], why: str) -> None:
    decision = plan_merges(traffic(**tokens), "base", ["a", "b", "c"], POLICY)
    assert decision.hot == [] and why in decision.why


def test_too_few_requests_to_judge_merge_nothing() -> None:
    decision = plan_merges({"a": {"requests": 9, "completion_tokens": 900}}, "base", ["a"], POLICY)
    assert decision.hot == [] and "fewer than min_requests (10)" in decision.why


def test_max_merged_keeps_the_hottest() -> None:
    policy = HotAdapters(min_share=0.3, min_requests=1, max_merged=1)
    assert plan_merges(traffic(a=300, b=500, c=200), "base", ["a", "b", "c"], policy).hot == ["b"]


def test_merged_replicas_are_started_here_so_only_a_local_target_may_have_them() -> None:
    with pytest.raises(ValidationError, match="hot_adapters starts merged replicas"):
        DeploymentSpec(base_model="tiny", target="hosts", hosts=["http://10.0.0.5:8000"],
                       hot_adapters={})
    spec = DeploymentSpec(base_model="tiny", port=8011, replicas=2, hot_adapters={})
    assert spec.merged_replica("local", "math-lora", 0) == ("local.merged.math-lora", 8013)


def test_a_deployment_with_the_policy_is_reviewed_on_its_schedule(tmp_path: Path) -> None:
    from config.loading import load_config

    (tmp_path / "factory.yaml").write_text(
        "base_models: {tiny: {source: local}}\n"
        "deployments:\n"
        "  chat: {base_model: tiny, hot_adapters: {review: '*/15 * * * *'}}\n"
        "  batch: {base_model: tiny, port: 8050}\n")
    graph = make_definitions(load_config(tmp_path / "factory.yaml")).resolve_asset_graph()
    chat = graph.get(dg.AssetKey(["deployment", "chat"])).automation_condition
    batch = graph.get(dg.AssetKey(["deployment", "batch"])).automation_condition
    assert chat is not None and "*/15 * * * *" in chat.get_label()
    assert batch is not None and "cron" not in str(batch.get_label())  # no policy, no review


PROMPTS = ["Ava has 7 apples. Ava gets 5 more apples. How many apples does Ava have now?",
           "A shop sells 12 pens a day. How many pens does it sell in 3 days?",
           "Tom had 20 marbles and lost 8. How many marbles are left?",
           "What is 15 + 27?"]


def greedy(url: str, model: str) -> list[tuple[str, float]]:
    """Each greedy (token, logprob) of the answers to PROMPTS."""
    answers = [httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "temperature": 0, "max_tokens": 24, "logprobs": True,
        "messages": [{"role": "user", "content": prompt}]}).json() for prompt in PROMPTS]
    return [(t["token"], t["logprob"]) for answer in answers
            for t in answer["choices"][0]["logprobs"]["content"]]


def same_answers(a: list[tuple[str, float]], b: list[tuple[str, float]], within: float
                 ) -> bool:
    return ([t for t, _ in a] == [t for t, _ in b]
            and all(abs(x - y) <= within for (_, x), (_, y) in zip(a, b, strict=True)))


def materialize(config: FactoryConfig) -> dg.AssetMaterialization:
    with dg.DagsterInstance.get() as instance:
        result = make_definitions(config).resolve_job_def("everything").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["deployment", "local"])])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return event.materialization


def test_the_hot_adapter_is_served_merged_and_answers_as_through_lora(
        vllm_url: str, small_project: tuple[FactoryConfig, object], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from config.gateway import GatewaySettings
    from tests.support.gateway_fixtures import ADMIN_TOKEN, serve, tenants

    project = small_project[0]
    monkeypatch.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    # the usage records: what applications asked through a gateway on this database; the
    # deployment reads them through that gateway's admin API
    for url, gateway in serve(GatewaySettings(database_url=database, upstreams=[vllm_url])):
        _, key, _, _ = tenants(gateway, ["tiny", "math-lora"])
        for i in range(12):
            model = "tiny" if i % 4 == 0 else "math-lora"
            assert httpx.post(f"{url}/v1/completions", timeout=60, headers={
                "authorization": f"Bearer {key}"}, json={
                "model": model, "prompt": PROMPTS[i % 4], "max_tokens": 8, "min_tokens": 8,
                "ignore_eos": True}).status_code == 200
        gateway.audit.drain()
        spec = project.deployments["local"].model_copy(
            update={"hot_adapters": HotAdapters(min_share=0.5, min_requests=10)})
        hot = project.model_copy(update={
            "deployments": {"local": spec},
            "gateway": project.gateway.model_copy(update={"url": url})})
        vllm = resources_for(project)["vllm"]
        try:
            metadata = materialize(hot).metadata
            table = metadata["hot_adapters"].value
            assert "| math-lora | 9 | 72 | 75% | yes |" in table, table
            assert "| tiny | 3 | 24 | 25% |  |" in table, table
            merged_url = metadata["merged"].value["math-lora"]
            assert merged_url.endswith(f":{spec.port + 1}")
            listing = httpx.get(f"{merged_url}/v1/models", timeout=10).json()["data"]
            assert [(m["id"], m.get("parent")) for m in listing] == [("math-lora", None)]
            # PEFT's merge and vLLM's LoRA kernels: the same tokens, with the same probabilities
            # (float32), where the base model's differ: the merged weights are the adapter's
            through_lora = greedy(vllm_url, "math-lora")
            assert same_answers(greedy(merged_url, "math-lora"), through_lora, within=1e-3)
            assert not same_answers(greedy(vllm_url, "tiny"), through_lora, within=1e-2)
            # the merged replica's batches: each answer as alone (worker/batch_canary.py)
            asked = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
            assert replay(merged_url, ["math-lora"], asked, max_tokens=16)["mismatches"] == []
            published = resources_for(project)["store"].get_json("deployments/local.json")
            assert {"url": merged_url, "models": ["math-lora"], "merged": "math-lora"} in (
                published["replicas"])
            again = materialize(hot).metadata  # same traffic, same version: kept as it is
            assert [r["action"] for r in again["replicas"].value] == ["unchanged", "unchanged"]
        finally:
            materialize(project)  # no policy: the merged replica stops, the gateways drop it
    assert vllm.merged_servers("local") == []
    assert [r["url"] for r in resources_for(project)["store"].get_json(
        "deployments/local.json")["replicas"]] == [vllm_url]
