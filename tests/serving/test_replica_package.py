"""The replica's image holds the resolver and the store it reads, nothing else
(infra/docker/replica.Dockerfile copies pyproject.toml, store/ and replica/): the two import
nothing of the control plane, and the project builds from those three alone with the
resolver's vLLM entry point."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.projects import REPO

SHIPPED = ("store", "replica")


def imported_packages(folder: Path) -> set[str]:
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
    return found


def test_the_resolver_and_the_store_import_only_each_other_and_outside_libraries() -> None:
    ours = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    for package in SHIPPED:
        reached = imported_packages(REPO / package) & ours
        assert reached <= set(SHIPPED), f"{package}/ imports {reached - set(SHIPPED)}"
    assert "replica" not in imported_packages(REPO / "store")  # the ground floor


def test_the_project_builds_from_the_replica_images_files_alone(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    shutil.copy(REPO / "pyproject.toml", image)
    for package in SHIPPED:
        shutil.copytree(REPO / package, image / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheel"),
                            str(image)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"replica/resolver.py", "store/reader.py", "store/keys.py"} <= set(names)
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(
        ".dist-info")} == set(SHIPPED)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "factory_lora_store = replica.resolver:register" in zipfile.ZipFile(
        wheel).read(entry_points).decode()
