"""The house's floors hold: the gateway runs without Dagster, and every import runs down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A process in which `import dagster` fails, as on a gateway host that never installed it; it
# imports every module of the packages named on its command line.
WITHOUT_DAGSTER = """
import importlib, importlib.abc, pkgutil, sys

class NoDagster(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "dagster" or name.startswith("dagster."):
            raise ImportError(f"dagster is not installed here (import of {name})")

sys.meta_path.insert(0, NoDagster())
for package in sys.argv[1:]:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), f"{package}."):
        # a program's entry point, and Alembic's scripts (run by Alembic), are not modules
        if not info.name.endswith(".__main__") and ".migrations." not in info.name:
            importlib.import_module(info.name)
print("imported", *sys.argv[1:])
"""


def import_without_dagster(*packages: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_DAGSTER, *packages], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_gateway_and_the_domain_packages_import_where_dagster_cannot() -> None:
    done = import_without_dagster("gateway", "ingest", "curation", "training", "evaluation",
                                  "models", "erasure", "monitoring", "store", "config")
    assert done.returncode == 0, done.stderr[-3000:]
    # the same process does refuse Dagster: the control plane's resources cannot load there
    refused = import_without_dagster("resources.object_store")
    assert refused.returncode != 0
    assert "dagster is not installed here" in refused.stderr


def test_every_import_runs_down_the_floors_pyproject_declares() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
