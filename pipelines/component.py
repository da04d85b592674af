"""factory.yaml as a Dagster component, so Dagster's own tools read the project: `dg list defs`,
`dg check defs` and `dg launch --assets` as well as the webserver and daemon
(pipelines/definitions.py loads the components under pipelines/defs/)."""

import os

import dagster as dg
from pydantic import Field

from config.loading import load_config
from pipelines.graph import make_definitions


class FactoryProject(dg.Component, dg.Model, dg.Resolvable):
    """A project file: its base models, datasets, adapters, evaluations, deployments and corpora
    as assets with their checks, and the jobs, sensors and schedules that keep them current."""

    config: str = Field("factory.yaml", description=(
        "the project file, relative to the project root; $FACTORY_CONFIG names another when "
        "set (the `factory` CLI sets it for --config)"))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        path = os.environ.get("FACTORY_CONFIG") or context.project_root / self.config
        return make_definitions(load_config(path))
