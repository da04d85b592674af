"""The artifact store (`store/artifacts.py`) as a Dagster resource: the same folders, manifests
and refs, configured in the Dagster UI and handed to every asset."""

from __future__ import annotations

import dagster as dg

from store.artifacts import ArtifactStore


class ObjectStore(dg.ConfigurableResource, ArtifactStore):
    """`ArtifactStore` with Dagster's configuration: assets declare it as their `store`."""
