"""`factory`: run the whole graph or a selection, open the UI, stop deployments.

`factory demo` and `factory materialize` run assets of factory.yaml in one Dagster run against
the project-local instance (SQLite under .factory/dagster_home), so the run is visible in
`factory ui`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from config.loading import ConfigError, load_config
from config.schema import FactoryConfig
from pipelines.runs import SelectionError, dagster_home, failed_steps, materialize
from store.backends import ArtifactMissing


def _config(path: str | None) -> FactoryConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def main() -> None:
    """Adapter Factory: private data in, evaluated and served adapters and RAG indexes out."""


@main.command()
@click.option("--config", "config_path", default=None, help="project file (default factory.yaml)")
def demo(config_path: str | None) -> None:
    """Materialize the whole graph end to end, then print where to look."""
    config = _config(config_path)
    started = time.monotonic()
    result = materialize(config)
    failed_assets, failed_checks = failed_steps(result)
    if failed_assets:
        raise click.ClickException("the run failed:\n  " + "\n  ".join(failed_assets))
    click.echo(summary(config, time.monotonic() - started))
    for check in failed_checks:
        click.echo(f"\nBlocking check failed (downstream assets skipped): {check}")
    if config.deployments:
        from pipelines import playground
        from pipelines.scaffold import ticket_rows

        playground.admin_token(config)  # the monitor reads the gateway's admin API
        key = playground.provision(config)
        url = playground.start(config)
        dagster = playground.start_dagster(config, dagster_home(config))
        spoken = playground.transcribe_sample(config, url, key)
        if spoken:
            click.echo(f"\nSpeech: {spoken}")
        loop = playground.close_the_loop(config, url, key)
        if loop:
            click.echo(f"\nThe loop: {loop}")
        watched = playground.watch(config, url, key, shifted=[
            row["messages"][-2]["content"] for row in ticket_rows(40, seed=99)])
        if watched:
            click.echo(f"\nMonitoring: {playground.watch_summary(config, url, watched)}")
        click.echo(f"\nPlayground: {url}/playground/   sign in with the key {key}\n"
                   f"Studio:     {url}/studio   the same key (project "
                   f"'{playground.PROJECT}', owner): upload data, train, promote\n"
                   f"Dagster UI: {dagster}\n"
                   f"  (project '{playground.PROJECT}': every served model and corpus; the "
                   "gateway and Dagster keep running, `factory stop` stops them)")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Start a project of your own in DIRECTORY: a commented factory.yaml and sample data
    (support tickets, policy documents with questions) that run as they are."""
    from pipelines.scaffold import write_project

    try:
        written = write_project(directory, directory.resolve().name or "my-project")
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    config = _config(str(directory / "factory.yaml"))  # what it wrote is a valid project
    click.echo("wrote " + ", ".join(str(p.relative_to(directory)) for p in written))
    click.echo(f"next: factory materialize --config {config.root / 'factory.yaml'}   "
               f"(then factory ui --config {config.root / 'factory.yaml'})")


@main.command("materialize")
@click.option("--config", "config_path", default=None, help="project file (default factory.yaml)")
@click.option("--select", "keys", multiple=True, metavar="KEY",
              help="an asset key such as dataset/chat or adapter/math-lora (repeatable); its "
                   "upstream assets that were never materialized run too. Default: all")
def materialize_command(config_path: str | None, keys: tuple[str, ...]) -> None:
    """Materialize the project's assets (or a selection) in one run on the project's instance,
    then say what was materialized and what failed."""
    config = _config(config_path)
    started = time.monotonic()
    try:
        result = materialize(config, list(keys))
    except SelectionError as exc:
        raise click.ClickException(str(exc)) from exc
    done = sorted(e.asset_key.to_user_string()  # type: ignore[attr-defined]
                  for e in result.get_asset_materialization_events())  # type: ignore[attr-defined]
    click.echo(f"materialized {len(done)} asset(s) in {time.monotonic() - started:.0f}s: "
               + ", ".join(done))
    failed_assets, failed_checks = failed_steps(result)
    for check in failed_checks:
        click.echo(f"Blocking check failed (downstream assets skipped): {check}")
    if failed_assets:
        raise click.ClickException("the run failed:\n  " + "\n  ".join(failed_assets))


def summary(config: FactoryConfig, seconds: float) -> str:
    from assets.deployments import published
    from config.metrics import METRICS
    from pipelines.graph import resources_for
    from resources.retrieval import open_index, retrieve
    from store.registry import Registry

    res = resources_for(config)
    store = res["store"]
    lines = [f"\nAdapter Factory: whole graph materialized in {seconds:.0f}s.", ""]
    if not config.deployments:  # with them, the demo starts Dagster and prints its URL
        lines.append(f"Dagster UI:  factory ui --config {config.root}/factory.yaml   "
                     "(then open http://127.0.0.1:3000)")
    for name, spec in config.evaluations.items():
        ref = store.read_ref(f"evaluation/{name}")
        metric = spec.promotion.primary
        scores = {m: s[metric] for m, s in ref["scores"].items() if metric in s}
        lines.append(f"Evaluation {name} ({METRICS[metric].label}, held-out test split): "
                     + ", ".join(f"{m} {v:.3f}" for m, v in scores.items())
                     + (f"; candidate - base = {scores['candidate'] - scores['base']:+.3f}"
                        if {"candidate", "base"} <= set(scores) else ""))
        lines.append(f"  gate: {ref['gate']}")
        champion = Registry(store).champion(spec.adapter)
        lines.append(f"  serving champion of {spec.adapter}: "
                     f"{champion['version'] if champion else 'none promoted'}")
    for name, spec in config.deployments.items():
        deployed = published(store, name)
        if deployed is None:
            continue
        url = deployed["replicas"][0]["url"]
        if config.is_speech_deployment(name):  # Whisper transcribes; it does not chat
            lines += [f"Endpoint {name}: {url}/v1  (model: {spec.base_model}, speech; stop with "
                      f"`factory stop {name}`)",
                      f"  curl -s {url}/v1/audio/transcriptions -F model={spec.base_model} "
                      "-F file=@<recording.wav|.flac|.mp3|.ogg|.webm|.m4a>"]
            continue
        model = spec.adapters[0] if spec.adapters else spec.base_model
        messages = example_conversation(config, store, model)
        body = json.dumps({"model": model, "max_tokens": 64, "temperature": 0,
                           "messages": messages})
        lines += [
            f"Endpoint {name}: {url}/v1  (models: {', '.join([spec.base_model, *spec.adapters])}; "
            f"stop with `factory stop {name}`)",
            f"  curl -s {url}/v1/chat/completions -H 'content-type: application/json' "
            f"-d '{body}'",
            f"  python -c \"from openai import OpenAI; c=OpenAI(base_url='{url}/v1', "
            f"api_key='none'); print(c.chat.completions.create(model='{model}', temperature=0, "
            f"messages={messages!r}).choices[0].message.content)\"",
        ]
    for name in config.corpora:
        corpus = store.local_dir(store.read_ref(f"corpus/{name}")["prefix"])
        questions = (corpus / "questions.jsonl").read_text().splitlines()
        if not questions:
            continue
        question = json.loads(questions[0])["question"]
        hits = retrieve(open_index(res["chroma"].client(), name), question, 3)
        lines.append(f"Retrieval from '{name}': {question!r}")
        lines += [f"  {h['score']:.3f} {h['source']}: {h['text'][:90]!r}" for h in hits]
    return "\n".join(lines)


def example_conversation(config: FactoryConfig, store: Any, model: str
                         ) -> list[dict[str, str]]:
    """A held-out conversation of the model's own dataset, up to its reply (system turn
    included: the prompt the adapter learned), as an example request."""
    from worker.chat import conversation, scored_rows

    mixture = config.mixtures.get(model)
    source = next(iter(mixture.adapters)) if mixture else model
    if source not in config.adapters:
        return [{"role": "user", "content": "Hello!"}]
    data = store.read_ref(f"dataset/{config.adapters[source].dataset}")
    rows = scored_rows(store.local_dir(data["prefix"]) / "test.jsonl")
    if not rows or "messages" not in rows[0]:  # pretraining text has no conversation to show
        return [{"role": "user", "content": "Hello!"}]
    history, _ = conversation(rows[0])
    return history


@main.command("forget")
@click.option("--config", "config_path", default=None)
@click.option("--document", default=None, help="a corpus document: its id (docs/a.txt, "
              "s3://...) or file name")
@click.option("--dataset", default=None, help="the dataset whose records to erase")
@click.option("--where", default=None, metavar="FIELD=VALUE",
              help="records whose field has this value (and future ones: the rule stays)")
@click.option("--match", default=None, metavar="TEXT", help="records containing this text")
@click.option("--dry-run", is_flag=True, help="only say what would be erased and flagged")
@click.option("--who", default=None, help="recorded in the ledger (default: the OS user)")
def forget_command(config_path: str | None, document: str | None, dataset: str | None,
                   where: str | None, match: str | None, dry_run: bool, who: str | None) -> None:
    """Erase a document or dataset records from every corpus, index and dataset version, list
    (and mark) the adapters trained on them and the deployments serving those, then apply the
    project's `erasure` policy (flag | retrain | unpublish). Audited in erasure/<id>.json."""
    import dagster as dg

    from ingest.problems import InputFileError
    from pipelines.forget import NothingToForget, find_document, find_records, forget, report
    from pipelines.graph import resources_for

    config = _config(config_path)
    if (document is None) == (dataset is None):
        raise click.UsageError("name one thing to forget: --document NAME, or --dataset NAME "
                               "with --where FIELD=VALUE or --match TEXT")
    if dataset is not None and dataset not in config.datasets:
        raise click.UsageError(f"no dataset {dataset!r}; declared: "
                               f"{', '.join(sorted(config.datasets)) or 'none'}")
    if dataset is not None and (where is None) == (match is None):
        raise click.UsageError("records are chosen by one of --where FIELD=VALUE or --match TEXT")
    field, _, value = (where or "").partition("=")
    if where is not None and not (field and value):
        raise click.UsageError(f"--where {where!r}: write FIELD=VALUE, both non-empty")
    if match is not None and not match.strip():
        raise click.UsageError("--match '': an empty text matches every record")
    store = resources_for(config)["store"]
    dagster_home(config)
    try:
        found = (find_document(store, config, document) if document is not None else
                 find_records(store, config, dataset, (field, value) if where else None,
                              match))
    except (NothingToForget, InputFileError, ArtifactMissing, dg.Failure) as exc:
        why = getattr(exc, "description", None) or str(exc)
        raise click.ClickException(f"nothing was changed: {why}") from exc
    entry = forget(config, store, found, who=who, dry_run=dry_run)
    click.echo(report(entry))
    if entry.get("failed"):
        raise SystemExit(1)


@main.command()
@click.option("--config", "config_path", default=None)
def adapters(config_path: str | None) -> None:
    """The adapter registry: every stored version of each adapter (sweep trials included), the
    current one (last trained, or a sweep's winner) and the promoted one (what is served)."""
    from config.adapters import trial_names
    from pipelines.graph import resources_for
    from store.registry import Registry

    config = _config(config_path)
    store = resources_for(config)["store"]
    registry = Registry(store)
    for name, spec in config.adapters.items():
        for adapter in [*trial_names(name, spec), name]:
            click.echo(registry_view(store, registry, adapter))


def registry_view(store: Any, registry: Any, adapter: str) -> str:
    from erasure.ledger import stored_versions

    try:
        current = store.read_ref(f"adapter/{adapter}")
    except ArtifactMissing:
        current = None
    champion = (registry.champion(adapter) or {}).get("version")
    lines = [f"{adapter}:" + ("" if current else " (not trained yet)")]
    if current and current.get("sweep_trial"):
        lines.append(f"  -> {current['sweep_trial']}@{current['version']} (best of its sweep: "
                     f"{current['sweep_values']})" + ("  PROMOTED" if champion else ""))
        return "\n".join(lines)
    erased = registry.read(adapter).get("erased", {})
    for version, m in stored_versions(store, "adapter", adapter).items():
        marks = [label for label, on in (("CURRENT", current and current["version"] == version),
                                         ("PROMOTED", champion == version),
                                         ("TRAINED-ON-ERASED-DATA", version in erased)) if on]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["created_at"]))
        lines.append(f"  {version}  {when}  steps={m.get('steps', '?')}  "
                     f"final_loss={_num(m.get('final_loss'))}  eval_loss={_num(m.get('eval_loss'))}"
                     f"  {m.get('dataset', '')}  {m.get('trainer', '')}  {' '.join(marks)}")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


@main.command()
@click.argument("deployment", required=False)
@click.option("--config", "config_path", default=None)
def stop(deployment: str | None, config_path: str | None) -> None:
    """Stop one deployment's vLLM servers (all, and the demo's gateway, when none is named):
    local processes stop, a Kubernetes target's objects are deleted, servers of a hosts target
    keep running; gateways stop routing to it either way."""
    from assets.deployment_targets import TARGETS
    from assets.deployments import unpublish
    from pipelines.graph import resources_for

    config = _config(config_path)
    resources = resources_for(config)
    for name in [deployment] if deployment else list(config.deployments):
        spec = config.deployments.get(name)
        # a deployment no longer declared leaves only what it started on this machine
        for line in TARGETS[spec.target if spec else "local"].stop(name, spec, resources["vllm"]):
            click.echo(line)
        unpublish(resources["store"], name)  # gateways stop routing to it
    if deployment is None:
        from pipelines import playground

        for name, stopped in (("gateway", playground.stop(config)),
                              ("dagster", playground.stop_dagster(config))):
            click.echo(f"{name}: {'stopped' if stopped else 'was not running'}")


@main.command("render-deployment")
@click.argument("deployment")
@click.option("--config", "config_path", default=None)
@click.option("--out", default="infra/generated", show_default=True)
@click.option("--image", default=None,
              help="the replica image (infra/docker/replica.Dockerfile) as the hosts pull it; "
                   "default: adapter-factory-replica:v<the vLLM version serve.txt pins>")
def render_deployment(deployment: str, config_path: str | None, out: str, image: str) -> None:
    """Write the GPU-host launch of a deployment: Kubernetes manifest, docker script, EC2
    user data. Same flags as the local server; the base model synced from the object store,
    adapters pulled by the replica's resolver."""
    from assets.deployment_targets.gpu_launch import gpu_launch
    from pipelines.graph import resources_for

    config = _config(config_path)
    if deployment not in config.deployments:
        raise click.ClickException(f"no deployment {deployment!r} in the config "
                                   f"(declared: {', '.join(config.deployments)})")
    try:
        launch = gpu_launch(resources_for(config)["store"], config, deployment, image)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    folder = Path(out) / deployment
    folder.mkdir(parents=True, exist_ok=True)
    for filename, text in (("k8s.yaml", launch.kubernetes()),
                           ("docker-run.sh", launch.docker_script()),
                           ("ec2-user-data.sh", launch.ec2_user_data())):
        (folder / filename).write_text(text)
        click.echo(f"wrote {folder / filename}")


@main.command()
@click.option("--config", "config_path", default=None)
@click.option("--port", default=3000)
def ui(config_path: str | None, port: int) -> None:
    """Open this project's graph in the Dagster UI, with the daemon that runs its sensors and
    automation (`dg dev` on this repository's Dagster project)."""
    config = _config(config_path)
    dagster_home(config)
    os.environ["FACTORY_CONFIG"] = str(config.root / Path(config_path or "factory.yaml").name)
    dg = str(Path(sys.executable).with_name("dg"))
    os.execv(dg, [dg, "dev", "--target-path", str(Path(__file__).resolve().parents[1]),
                  "--port", str(port)])


if __name__ == "__main__":
    main()
