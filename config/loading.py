"""Reading `factory.yaml`: the file named by the caller, $FACTORY_CONFIG or ./factory.yaml,
validated against config/schema.py, every mistake reported with its key path."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from config.retired import retired_uses
from config.schema import ConfigProblems, FactoryConfig


class ConfigError(Exception):
    """A factory.yaml mistake, phrased as key path + problem + fix."""


def _format_errors(path: Path, err: ValidationError) -> str:
    lines: list[str] = []
    for e in err.errors():
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigProblems):  # cross-references: each names its own key
            lines += [f"  {problem}" for problem in cause.problems]
            continue
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the documented keys in README.md"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg}")
    return "\n".join([f"{path}: {len(lines)} problem(s)", *lines])


def load_config(path: str | os.PathLike[str] | None = None) -> FactoryConfig:
    """Load the project file named by the argument, $FACTORY_CONFIG, or ./factory.yaml."""
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
        raise ConfigError(_format_errors(cfg_path, exc)) from exc
    config._root = cfg_path.resolve().parent
    return config
