"""The Dagster code location (`workspace.yaml`, `dg`): the components under pipelines/defs/,
that is the project file (factory.yaml, or $FACTORY_CONFIG)."""

from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(project_root=PROJECT_ROOT)
