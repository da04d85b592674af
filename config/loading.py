"""Reading `factory.yaml`: the file named by the caller, $FACTORY_CONFIG or ./factory.yaml,
validated against the schema (config/schema.py and its sections), every mistake reported with
its key path."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from config.common import ConfigProblems
from config.retired import retired_uses
from config.schema import FactoryConfig
from config.studio import TRAININGS, StoredTraining, merge_trainings, parse_trainings
from store.reader import ArtifactReader

log = logging.getLogger("factory.config")


class ConfigError(Exception):
    """A factory.yaml mistake, phrased as key path + problem + fix."""


def format_errors(path: Path, err: ValidationError) -> str:
    lines: list[str] = []
    for e in err.errors():
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigProblems):  # cross-references: each names its own key
            lines += [f"  {problem}" for problem in cause.problems]
            continue
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = ("unknown key; check the spelling against the keys config/ documents "
                   "(docs/operations.md#configuration)")
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg}")
    return "\n".join([f"{path}: {len(lines)} problem(s)", *lines])


def load_config(path: str | os.PathLike[str] | None = None, studio: bool = True
                ) -> FactoryConfig:
    """Load the project file named by the argument, $FACTORY_CONFIG, or ./factory.yaml, with
    the Studio's trainings (`studio=False`: the file alone)."""
    raw, config = load_platform(path)
    return with_studio(config, raw) if studio else config


def load_platform(path: str | os.PathLike[str] | None = None
                  ) -> tuple[dict, FactoryConfig]:
    """The project file as written (the mapping the Studio merges trainings into) and as
    validated, without the Studio's trainings."""
    cfg_path = Path(path or os.environ.get("FACTORY_CONFIG", "factory.yaml"))
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: no such config file (set FACTORY_CONFIG or pass --config)")
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping of sections")
    retired = retired_uses(raw)
    if retired:
        raise ConfigError("\n".join([f"{cfg_path}: {len(retired)} problem(s)",
                                     *(f"  {m}" for m in retired)]))
    try:
        config = FactoryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(cfg_path, exc)) from exc
    config._root, config._path = cfg_path.resolve().parent, cfg_path.resolve()
    return raw, config


def stored_trainings(config: FactoryConfig) -> list[StoredTraining]:
    """Every Studio training in the platform's object store."""
    store = config.gateway_settings.object_store
    reader = ArtifactReader(store, config.storage.s3_endpoint_url)
    try:
        keys = reader.list(TRAININGS)
    except Exception as exc:  # an S3 store out of reach (botocore's errors share no base)
        log.warning("Studio trainings not read: %s cannot be listed (%s)", store, exc)
        return []
    return parse_trainings(keys, reader.read_json)


def with_studio(config: FactoryConfig, raw: dict) -> FactoryConfig:
    """The config with every Studio training that validates beside the platform's own
    declarations and the trainings before it (see `accepted_trainings`)."""
    _, merged = accepted_trainings(raw, stored_trainings(config))
    if merged is None:
        return config
    merged._root, merged._path = config.root, config._path
    return merged


def accepted_trainings(raw: dict, trainings: list[StoredTraining]
                       ) -> tuple[list[StoredTraining], FactoryConfig | None]:
    """The trainings that validate in order beside the platform's declarations, and the config
    with them (None when there are none); one that does not is left out and logged: the Studio
    refused it at launch, so only a later platform change can have made it invalid, and it must
    stop neither the code location nor other members' launches."""
    accepted: list[StoredTraining] = []
    merged: FactoryConfig | None = None
    for training in trainings:
        try:
            merged = FactoryConfig.model_validate(merge_trainings(raw, [*accepted, training]))
        except ValidationError as exc:
            log.warning("Studio training %s left out: %s", training.full_name, exc)
            continue
        accepted.append(training)
    return accepted, merged
