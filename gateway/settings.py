"""The gateway's settings, read through the one loader of `factory.yaml` (config/loading.py),
so the gateway and the factory agree on every default (replica URLs, Chroma, paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.gateway import GatewaySettings
from config.loading import load_config


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> GatewaySettings:
    """The `gateway:` section of the project file (or the defaults, relative to the working
    folder, without one), with the given overrides."""
    if config_path is not None:
        config = load_config(config_path, studio=False)
        settings, root = config.gateway_settings, config.root
    else:
        settings, root = GatewaySettings().with_environment(), Path.cwd()
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        settings = GatewaySettings.model_validate(settings.model_dump() | given)
    return settings.anchored(root)
