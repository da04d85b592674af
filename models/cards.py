"""Model cards: the README.md of every published adapter version, in the Hugging Face format.

One renderer, fed from what the store knows at the time: the adapter's lineage and losses (its
manifest), the dataset version and its split sizes, every evaluation of this version (base vs
adapter vs the champion it was measured against) and the registry (champion or not, why). The
adapter, evaluation and promotion assets each call `write_card` after their own write, so the
card grows with the artifact; the folder still loads with PEFT and uploads with huggingface_hub
unchanged, since README.md is where both expect a card.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from pydantic import TypeAdapter

from config.adapters import AdapterSpec, trial_names
from config.graders import Grader
from config.metrics import METRICS
from config.objectives import OBJECTIVES
from config.schema import FactoryConfig
from store.artifacts import ArtifactStore
from store.backends import ArtifactMissing
from store.keys import artifact_prefix
from store.registry import champion_of, events_of

GRADER: TypeAdapter[Any] = TypeAdapter(Grader)


def grader_label(grader: dict[str, Any]) -> str:
    """A grader as the card names it: its type and what it checks."""
    return GRADER.validate_python(grader).label()


def _ref(store: ArtifactStore, ref: str) -> dict[str, Any] | None:
    try:
        return store.read_ref(ref)
    except ArtifactMissing:
        return None


def evaluations_of(store: ArtifactStore, config: FactoryConfig, adapter: str,
                   version: str) -> list[tuple[str, dict[str, Any]]]:
    """(evaluation name, its ref) for every evaluation whose candidate was this version."""
    found = []
    for name, spec in config.evaluations.items():
        ref = _ref(store, f"evaluation/{name}") if spec.adapter == adapter else None
        if ref and ref.get("candidate_version") == version:
            found.append((name, ref))
    return found


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _evaluation_section(config: FactoryConfig, evaluations: list[tuple[str, dict[str, Any]]]
                        ) -> list[str]:
    if not evaluations:
        return ["Not evaluated yet: materialize its evaluation asset to add base vs adapter "
                "scores here."]
    lines = []
    for name, ref in evaluations:
        spec = config.evaluations[name]
        scores: dict[str, dict[str, float]] = ref["scores"]
        columns = [c for c in ("base", "candidate", "champion") if c in scores]
        header = {"base": "base model", "candidate": "this adapter",
                  "champion": "previous champion"}
        metrics = sorted({m for c in columns for m in scores[c]},
                         key=lambda m: (m != spec.promotion.primary, m))
        lines += [f"Evaluation `{name}` on the test split (primary metric: "
                  f"{METRICS[spec.promotion.primary].label}).", "",
                  "| metric | " + " | ".join(header[c] for c in columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {METRICS[m].label if m in METRICS else m} | "
                  + " | ".join(_fmt(scores[c].get(m)) for c in columns) + " |" for m in metrics]
        lines += ["", f"Gate: {ref['gate']}", ""]
    return lines


def _promotion_section(registry: dict[str, Any], version: str,
                       evaluations: list[tuple[str, dict[str, Any]]]) -> str:
    champion = champion_of(registry) or {}
    events = events_of(registry, version)
    if champion.get("version") == version:
        when = dt.datetime.fromtimestamp(champion["when"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        previous = champion.get("previous") or "none"
        return (f"**Champion** since {when} (promoted by {champion['who']}; previous champion: "
                f"{previous}); the deployments serve this version.")
    unpublished = [e for e in events if e["event"] == "unpublished"]
    if unpublished:
        return f"Was champion; unpublished: {unpublished[-1]['why']}"
    if any(e["event"] == "promoted" for e in events):
        return f"Was champion; replaced by {champion.get('version', 'none')}."
    rejected = [e for e in events if e["event"] == "rejected"]
    if rejected:
        return f"Not promoted: {rejected[-1]['why']}"
    if any(e["gate_passed"] for _, e in evaluations):
        return "Passed its promotion gate; becomes champion when its promotion asset runs."
    return "Not promoted (no evaluation has passed its gate yet)."


def erased_banner(erasures: list[str]) -> str:
    return (f"> **Trained on erased data** ({', '.join(erasures)}): a dataset version this "
            "adapter learnt from held records erased since; see `erasure/<id>.json` and the "
            "project's `erasure` policy.")


def mark_erased_card(store: ArtifactStore, prefix: str, erasures: list[str]) -> None:
    """Put the banner under the title of a stored version's card (once)."""
    card = store.local_dir(prefix) / "README.md"
    lines = (card.read_text() if card.is_file() else f"# {prefix}\n").splitlines()
    marked = [i for i, line in enumerate(lines) if "**Trained on erased data**" in line]
    if marked:
        lines[marked[0]] = erased_banner(erasures)
    else:
        title = next((i for i, line in enumerate(lines) if line.startswith("# ")), 0)
        lines[title + 1:title + 1] = ["", erased_banner(erasures)]
    store.replace_card(prefix, "\n".join(lines) + "\n")


def render_card(store: ArtifactStore, config: FactoryConfig, name: str, spec: AdapterSpec,
                registry: dict[str, Any]) -> ModelCard:
    """The card of what `adapter/<name>` points at now (`spec`: its recipe, a sweep trial's
    included); `registry`: the adapter's champion and history."""
    ref = store.read_ref(f"adapter/{name}")
    if "sweep_trial" in ref:  # a sweep's winner: the recipe that trained it
        spec = dict(zip(trial_names(name, spec), (t for _, t in spec.trials()), strict=True)
                    )[ref["sweep_trial"]]
    version = ref["version"]
    base_spec = config.base_models[spec.base_model]
    base = base_spec.location if base_spec.source_kind == "hf" else spec.base_model
    base_ref = trained_on(store, ref.get("base_model", ""))
    data = _ref(store, f"dataset/{spec.dataset}") or {}
    counts = data.get("counts", {})
    evaluations = evaluations_of(store, config, name, version)
    results = [EvalResult(task_type="text-generation", dataset_type=spec.dataset,
                          dataset_name=f"{spec.dataset} (test split)", dataset_split="test",
                          metric_type=metric, metric_value=value)
               for _, e in evaluations for metric, value in e["scores"]["candidate"].items()]
    card_data = ModelCardData(
        base_model=base, license=base_ref.get("license"),
        library_name="peft" if spec.method != "full" else "transformers",
        tags=["adapter-factory", spec.method, spec.objective, "axolotl"],
        datasets=[spec.dataset], model_name=name if results else None,
        eval_results=results or None)
    t, lora = spec.training, spec.lora
    recipe = [("method", spec.method), ("objective", f"{spec.objective}: "
                                        f"{OBJECTIVES[spec.objective].description}"),
              ("LoRA", f"r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}"
               if spec.method != "full" else "none (full fine-tune)"),
              ("steps", f"{ref.get('steps', t.max_steps)} (micro batch {t.micro_batch_size} x "
                        f"{t.gradient_accumulation_steps} accumulation, "
                        f"sequence {t.sequence_len})"),
              ("learning rate", f"{t.learning_rate:g} ({t.lr_scheduler}, {t.warmup_steps} warmup)"),
              ("seed", str(t.seed)), ("trainer", ref.get("trainer", "?")),
              ("final training loss", str(ref.get("final_loss", "?"))),
              ("eval loss (val split)", str(ref.get("eval_loss", "?")))]
    if spec.objective == "grpo":
        recipe.append(("graders (reward)", "; ".join(
            f"{grader_label(g)} x {g['weight']:g}" for g in config.graders_of(name))))
    split_sizes = ", ".join(f"{k} {v}" for k, v in counts.items()) or "unknown"
    erased = registry.get("erased", {}).get(version)
    body = [
        f"# {name} ({version})", "", *([erased_banner(erased), ""] if erased else []),
        f"A {spec.method} {spec.objective} adapter of `{ref.get('base_model', base)}`, trained "
        f"by Adapter Factory on `{ref.get('dataset', spec.dataset)}`.", "",
        _base_line(spec.base_model, base_spec.source, base_ref), "",
        "## Intended use", "",
        spec.card.intended_use or f"Answering as the `{spec.dataset}` conversations do, through "
        "the project's gateway (`model: " + name + "`).", "",
        "## Training", "", "| setting | value |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in recipe), "",
        f"Dataset `{spec.dataset}` version {data.get('version', '?')} "
        f"({data.get('dataset_kind', '?')} rows: {split_sizes}).", "",
        "## Evaluation", "", *_evaluation_section(config, evaluations), "",
        "## Promotion", "", _promotion_section(registry, version, evaluations), "",
        "## Limitations", "",
        spec.card.limitations or "Measured only on the test split of its own dataset; it "
        "inherits every limit of its base model, and the scores above say nothing about inputs "
        "unlike that data.", "",
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body))


def trained_on(store: ArtifactStore, base: str) -> dict[str, Any]:
    """What the adapter's own base version (`name@version` in its ref) recorded when it was
    published (licence, original name, file hash), not whatever that name points at now."""
    name, _, version = base.partition("@")
    try:
        return store.manifest(artifact_prefix("base_model", name, version)) if version else {}
    except ArtifactMissing:
        return {}


def _base_line(name: str, source: str, ref: dict[str, Any]) -> str:
    """Which weights the adapter needs and under which licence: from the base model's ref."""
    about = f"Base model `{name}`: `{source}`"
    if ref.get("original_name"):
        about += f", {ref['original_name']}"
    if ref.get("source_sha256"):
        about += f" (file sha256 {ref['source_sha256'][:16]}, dequantised to float32)"
    return f"{about}; licence: {ref.get('license') or 'not recorded'}."


def write_card(store: ArtifactStore, config: FactoryConfig, name: str, spec: AdapterSpec,
               registry: dict[str, Any]) -> str:
    """Render and store the card of `adapter/<name>`; returns its Markdown (for metadata)."""
    card = render_card(store, config, name, spec, registry)
    store.replace_card(store.read_ref(f"adapter/{name}")["prefix"], str(card))
    return str(card)
