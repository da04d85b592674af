"""A broken factory.yaml fails before anything runs, naming the key and the fix."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from config.loading import ConfigError, load_config
from pipelines.cli import main
from resources.vllm_launch import server_args

SMALL = Path(__file__).parents[1] / "configs" / "small.yaml"


def write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(SMALL.read_text())
    mutate(raw)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_for(tmp_path: Path, mutate) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, mutate))
    return str(exc.value)


def test_small_config_is_valid() -> None:
    config = load_config(SMALL)
    assert set(config.adapters) == {"math-lora", "math-lora-b"}
    assert config.mixtures["math-mix"].adapters == {"math-lora": 0.7, "math-lora-b": 0.3}
    assert config.root == SMALL.parent


def test_misspelt_key_is_named(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["adapters"]["math-lora"]["lora"].update(rank=8))
    assert "adapters.math-lora.lora.rank: unknown key" in msg


def test_reference_to_undeclared_dataset_lists_declared_ones(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["adapters"]["math-lora"].update(dataset="maths"))
    assert "adapters.math-lora.dataset: 'maths' is not in datasets (declared: math)" in msg


def test_bad_model_source_says_what_to_write(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["base_models"]["tiny"].update(source="huggingface"))
    assert "base_models.tiny.source" in msg and "hf:<org>/<repo>" in msg


def test_wrong_type_names_key(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["adapters"]["math-lora"]["training"].update(
        max_steps="many"))
    assert "adapters.math-lora.training.max_steps" in msg


def test_unservable_head_size_rejected(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["base_models"]["tiny"]["architecture"].update(
        hidden_size=120, num_heads=4))
    assert "base_models.tiny.architecture" in msg and "head size" in msg


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_text("adapters: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_cli_reports_config_error_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, lambda r: r["deployments"]["local"].update(adapters=["nope"]))
    result = CliRunner().invoke(main, ["demo", "--config", str(path)])
    assert result.exit_code != 0
    assert "deployments.local.adapters[0]: 'nope' is not in adapters" in result.output
    assert "Traceback" not in result.output


def test_deployed_adapter_without_evaluation_is_rejected(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["evaluations"].pop("math-eval"))
    assert "deployments.local.adapters[0]: 'math-lora' has no evaluation" in msg
    assert "mixtures.math-mix.adapters.math-lora: has no evaluation" in msg


def test_a_deployment_on_other_hosts_lists_them_and_needs_a_store_they_can_read(
        tmp_path: Path) -> None:
    def hosts(**fields: object):  # type: ignore[no-untyped-def]
        return lambda r: r["deployments"]["local"].update(fields)

    assert "target: hosts lists its servers in `hosts`" in error_for(
        tmp_path, hosts(target="hosts"))
    assert "hosts is for target: hosts (this deployment's target is local)" in error_for(
        tmp_path, hosts(hosts=["http://10.0.0.5:8000"]))
    assert "distinct http(s)://host:port URLs" in error_for(
        tmp_path, hosts(target="hosts", hosts=["10.0.0.5:8000"]))
    msg = error_for(tmp_path, hosts(target="hosts", hosts=["http://10.0.0.5:8000"]))
    assert "deployments.local.target: hosts servers pull adapters from the object store" in msg
    assert "set it to an s3://bucket/prefix" in msg

    def on_s3(raw: dict) -> None:
        hosts(target="hosts", hosts=["http://10.0.0.5:8000"])(raw)
        raw["storage"]["object_store"] = "s3://models/factory"

    deployment = load_config(write(tmp_path, on_s3)).deployments["local"]
    assert deployment.target == "hosts" and deployment.hosts == ["http://10.0.0.5:8000"]


def test_gateway_section_is_validated(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r.update(gateway={"port": 8080, "limts": {}}))
    assert "gateway.limts: unknown key" in msg


def test_a_base_only_deployment_launches_vllm_without_lora(tmp_path: Path) -> None:
    msg = error_for(tmp_path, lambda r: r["deployments"]["local"].update(max_loras=0))
    assert "deployments.local.max_loras: raise it to >= 2" in msg
    plain = server_args(model="/m", served_name="tiny", host="127.0.0.1", port=8000,
                        dtype="float32", max_model_len=512, max_loras=0, ranks=[], extra_args=[])
    assert "--enable-lora" not in plain and "--max-loras" not in plain
    with pytest.raises(ValueError, match="max_loras is 0 but 1 adapter"):
        server_args(model="/m", served_name="tiny", host="127.0.0.1", port=8000,
                    dtype="float32", max_model_len=512, max_loras=0, ranks=[8], extra_args=[])


def test_lora_slots_can_be_sized_ahead_for_larger_later_champions() -> None:
    """Without max_lora_rank the slots fit today's champions, so a rank-64 champion promoted
    later needs a new server; with it, the running one can pull that champion."""
    def rank_flag(ranks: list[int], reserved: int | None) -> str:
        args = server_args(model="/m", served_name="tiny", host="127.0.0.1", port=8000,
                           dtype="float32", max_model_len=512, max_loras=4, ranks=ranks,
                           extra_args=[], max_lora_rank=reserved)
        return args[args.index("--max-lora-rank") + 1]

    assert rank_flag([16], None) == "16"
    assert rank_flag([16], 40) == "64"  # rounded up to a value vLLM accepts
    assert rank_flag([128], 32) == "128"  # never below what is served now
    assert rank_flag([], None) == "8"


def test_each_cross_reference_problem_is_its_own_line_with_its_key_path(tmp_path: Path) -> None:
    def two_mistakes(raw: dict) -> None:
        raw["adapters"]["math-lora"]["dataset"] = "maths"
        raw["deployments"]["local"]["base_model"] = "nope"

    lines = error_for(tmp_path, two_mistakes).splitlines()
    assert "(top level)" not in "\n".join(lines)
    assert "  adapters.math-lora.dataset: 'maths' is not in datasets (declared: math)" in lines
    assert "  deployments.local.base_model: 'nope' is not in base_models (declared: tiny)" in lines
    assert lines[0].endswith(f"{len(lines) - 1} problem(s)")


def test_the_gateway_reads_the_project_file_through_the_one_loader(tmp_path: Path) -> None:
    from gateway.settings import load_settings

    path = write(tmp_path, lambda r: r["deployments"]["local"].update(replicas=2, port=9100))
    settings = load_settings(path)
    # replicas are not re-derived from deployments.*: the gateway follows what they published
    assert settings.upstreams == []
    assert settings.object_store == f"file://{tmp_path / '.factory' / 'store'}"
    assert settings == load_config(path).gateway_settings
    assert settings.chroma_path == str(tmp_path / ".factory" / "chroma")
    assert settings.database_url == f"sqlite:///{tmp_path / '.factory' / 'gateway.db'}"


def test_the_database_password_can_stay_out_of_the_project_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway and the usage asset read the same database; in a cluster its URL comes from a
    Secret's environment variable, and a command-line --database-url still wins."""
    from gateway.settings import load_settings

    path = write(tmp_path, lambda r: None)
    url = "postgresql+psycopg2://gateway:s3cret@db.internal:5432/gateway"
    monkeypatch.setenv("FACTORY_GATEWAY_DATABASE_URL", url)
    assert load_config(path).gateway_settings.database_url == url
    assert load_settings(path).database_url == url
    assert load_settings(None).database_url == url
    assert load_settings(path, database_url="sqlite:////x.db").database_url == "sqlite:////x.db"


def test_a_retired_value_says_what_changed_and_what_to_write(tmp_path: Path) -> None:
    """A project file written two weeks ago: `local_tasks: [generation]`."""
    message = error_for(tmp_path, lambda raw: raw["evaluations"]["math-eval"].update(
        local_tasks=["multiple_choice", "generation"]))
    assert "evaluations.math-eval.local_tasks: 'generation' was retired (2026-11-29)" in message
    assert "always measured" in message and "remove 'generation' from local_tasks" in message
    assert "Input should be" not in message


def test_a_retired_key_is_named_with_its_replacement() -> None:
    from config.retired import Retired, retired_uses

    table = [Retired("deployments.*.gpu", None, "2026-12-01", "moved", "write compute.kind")]
    raw = {"deployments": {"a": {"gpu": 1}, "b": {"port": 1}}}
    assert retired_uses(raw, table) == [
        "deployments.a.gpu was retired (2026-12-01): moved; write compute.kind"]
    assert retired_uses({"deployments": {"a": {}}}, table) == []
    assert retired_uses({"deployments": {1: {"gpu": 2}}, True: 3}, table) == [  # YAML's 1:, yes:
        "deployments.1.gpu was retired (2026-12-01): moved; write compute.kind"]


def test_every_retired_row_is_refused_by_the_schema_too() -> None:
    """A row must never reject what the schema accepts: each retired use fails validation."""
    from pydantic import ValidationError

    from config.retired import RETIRED
    from config.schema import FactoryConfig

    examples = {"evaluations.*.local_tasks": {"evaluations": {"e": {
        "adapter": "a", "local_tasks": ["generation"]}}}}
    for row in RETIRED:
        with pytest.raises(ValidationError):
            FactoryConfig.model_validate(examples[row.path])


def test_studio_trainings_join_the_config_and_one_made_invalid_later_is_left_out(
        tmp_path: Path) -> None:
    """A member's stored training becomes `<project>--<name>` assets; one that a later platform
    change made invalid (its base model removed) stops neither the code location nor the rest."""
    import json
    import time

    from config.studio import StoredTraining, TrainingRequest, training_key

    (tmp_path / "factory.yaml").write_text(
        "storage: {object_store: file://store}\n"
        "base_models:\n  tiny: {source: local}\n"
        "deployments:\n  local: {base_model: tiny}\n")
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    for name, base in (("triage", "tiny"), ("old", "removed")):
        training = StoredTraining(
            project="support", project_id=7, created_by="sam", created_at=time.time(),
            request=TrainingRequest(name=name, dataset="0" * 32, base_model=base),
            data_kind="sft", source={"path": str(tmp_path / "data.jsonl")})
        key = tmp_path / "store" / training_key(7, name)
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps(training.model_dump()))
    config = load_config(tmp_path / "factory.yaml")
    assert set(config.adapters) == {"support--triage"}
    assert config.evaluations["support--triage"].adapter == "support--triage"
    assert config.deployments["local"].adapters == ["support--triage"]
    assert config.datasets["support--triage"].pii.scrub
    assert load_config(tmp_path / "factory.yaml", studio=False).adapters == {}


def test_a_corpus_source_names_a_declared_corpus_and_gives_pretraining_text(
        tmp_path: Path) -> None:
    def notes(kind: str, corpus: str):  # type: ignore[no-untyped-def]
        return lambda r: r["datasets"].update(notes={
            "kind": kind, "sources": [{"corpus": corpus}], "base_model": "tiny"})

    assert "datasets.notes.sources[0].corpus: 'memos' is not in corpora (declared: filings)" \
        in error_for(tmp_path, notes("pretrain", "memos"))
    assert "use it in a kind: pretrain dataset" in error_for(tmp_path, notes("sft", "filings"))
    config = load_config(write(tmp_path, notes("pretrain", "filings")))
    assert config.datasets["notes"].sources[0].corpus == "filings"  # type: ignore[union-attr]
