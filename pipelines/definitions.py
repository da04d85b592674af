"""The Dagster code location (`workspace.yaml`): the graph of $FACTORY_CONFIG or factory.yaml."""

from config.loading import load_config
from pipelines.graph import make_definitions

defs = make_definitions(load_config())
