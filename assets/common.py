"""What every asset family shares: version hashes, refs in the object store, metadata helpers."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from resources.object_store import ObjectStore
from store.backends import ArtifactMissing
from store.keys import artifact_prefix

# Every check's automation condition: it runs whenever Dagster's automation requests the asset
# it checks, in the same run, so a blocking check still gates what follows (sensors/automation.py)
WITH_ITS_ASSET = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.will_be_requested()).with_label("with the asset it checks")

Definition = dg.AssetsDefinition | dg.AssetChecksDefinition


def version_of(*parts: Any) -> str:
    """A stable short hash of JSON-serialisable parts: the lineage key of an artifact."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def publish(store: ObjectStore, kind: str, name: str, version: str, local_dir: Path,
            **info: Any) -> dict[str, Any]:
    """Upload a finished folder, then point the ref at it (the ref is written last)."""
    prefix = artifact_prefix(kind, name, version)
    manifest = store.put_dir(prefix, local_dir, kind=kind, name=name, version=version, **info)
    return _point_ref(store, kind, name, version, prefix, manifest, info)


def _point_ref(store: ObjectStore, kind: str, name: str, version: str, prefix: str,
               manifest: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    ref = {"version": version, "prefix": prefix, "digest": manifest["digest"], **info}
    store.write_ref(f"{kind}/{name}", ref)
    return ref


def alias(store: ObjectStore, kind: str, name: str, target: dict[str, Any], **info: Any
          ) -> dict[str, Any]:
    """Point `kind/name` at an artifact stored under another name (a sweep's winning trial):
    nothing is copied, readers of `kind/name` get the target's files and lineage."""
    lineage = {k: v for k, v in target.items() if k not in ("version", "prefix", "digest")}
    return _point_ref(store, kind, name, target["version"], target["prefix"],
                      store.manifest(target["prefix"]), {**lineage, **info})


def current(store: ObjectStore, kind: str, name: str) -> dict[str, Any]:
    """`store.current` failing the step with its message (the asset to materialize first)."""
    try:
        return store.current(kind, name)
    except ArtifactMissing as exc:
        raise dg.Failure(str(exc)) from exc


def reuse_if_complete(store: ObjectStore, kind: str, name: str, version: str,
                      **info: Any) -> dict[str, Any] | None:
    """Identical inputs -> the stored artifact is the answer; no recomputation."""
    prefix = artifact_prefix(kind, name, version)
    try:
        manifest = store.manifest(prefix)
    except ArtifactMissing:
        return None
    return _point_ref(store, kind, name, version, prefix, manifest, info)


def png_markdown(fig: Any, title: str) -> dg.MetadataValue:
    """A matplotlib figure as markdown with an inline PNG (the Dagster UI renders it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return dg.MetadataValue.md(
        f"![{title}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"
    )


def loss_curve(history: list[dict[str, Any]], title: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for key, label in (("loss", "training"), ("eval_loss", "eval (val split)")):
        points = [(int(h["step"]), float(h[key])) for h in history if key in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=label)
    if ax.lines:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return png_markdown(fig, title)


def reward_metadata(history: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """A GRPO run's reward per step (mean with its spread over the sampled replies), each
    grader's mean, KL to the starting weights and reply length, as figures and one plot; empty
    for a run that logged no reward."""
    steps = [h for h in history if "reward" in h]
    if not steps:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [int(h["step"]) for h in steps]
    graders = sorted({k.split("/")[1] for h in steps for k in h
                      if k.startswith("rewards/") and k.endswith("/mean")})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    mean = [float(h["reward"]) for h in steps]
    spread = [float(h.get("reward_std", 0)) for h in steps]
    axes[0].plot(x, mean, marker=".", label="reward")
    axes[0].fill_between(x, [m - s for m, s in zip(mean, spread, strict=True)],
                         [m + s for m, s in zip(mean, spread, strict=True)], alpha=0.2)
    for grader in graders:
        axes[0].plot(x, [h.get(f"rewards/{grader}/mean") for h in steps], ls="--", label=grader)
    axes[1].plot(x, [h.get("kl") for h in steps], marker=".")
    axes[2].plot(x, [h.get("completions/mean_length") for h in steps], marker=".")
    for ax, label in zip(axes, ("reward (mean, spread)", "KL to the start", "reply tokens"),
                         strict=True):
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    last = steps[-1]
    return {"first_reward": round(mean[0], 4), "final_reward": round(mean[-1], 4),
            "reward_per_step": [round(m, 4) for m in mean],
            "final_reward_std": round(spread[-1], 4),
            "graders_final": {g: last.get(f"rewards/{g}/mean") for g in graders},
            # the worst step's share of replies a grader failed to grade (scored 0 instead)
            "grader_failed_share": max((float(h.get(f"grader_failed/{g}", 0)) for h in steps
                                        for g in graders), default=0.0),
            "mean_completion_length": round(sum(float(h.get("completions/mean_length", 0))
                                                for h in steps) / len(steps), 1),
            # seconds spent sampling replies (worker/grpo_timing.py), over all steps
            "generation_seconds": round(sum(float(h.get("generation_seconds", 0))
                                            for h in steps), 1),
            "reward_curve": png_markdown(fig, title)}


def store_link(store: ObjectStore, prefix: str) -> dg.MetadataValue:
    local = store.backend.local_path(prefix)
    return dg.MetadataValue.path(str(local)) if local else dg.MetadataValue.url(
        f"{store.url.rstrip('/')}/{prefix}"
    )


def fail_if_axolotl_rejects(subject: str, problems: list[dict[str, str]],
                            key: Callable[[str], str] = lambda axolotl_key: axolotl_key) -> None:
    """Fail the step with each of Axolotl's objections to a rendered config, under `key`'s
    name for it (an adapter maps it back to its factory.yaml key)."""
    if problems:
        raise dg.Failure(
            f"Axolotl rejects the config rendered for {subject}; nothing was trained",
            metadata={"problems": [f"{key(p['key'])}: {p['message']}" for p in problems]})
