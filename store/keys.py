"""Where each thing lives in the object store: the one table of its keys, read by every program
that writes or reads there (the control plane, the gateway, a replica's resolver).

    <kind>/<name>/<version>/...      a published folder; complete once its manifest exists
    refs/<kind>/<name>.json          the current version of `kind/name`
    registry/<adapter>.json          the champion, the promotion history, erased versions
    deployments/<name>.json          what a deployment serves and where (the gateway routes)
    cards/<model>/README.md          a speech model's card (adapters' cards are in their folder)
    transcripts/<model>@<v>/<sha>.json  a recording's transcript, by the recording's content
"""

from __future__ import annotations

# every declared name (an adapter, a dataset, a deployment...): a path segment of its keys, and
# the rule factory.yaml validates (config/common.py) and a replica's resolver applies
NAME_PART = "[a-z][a-z0-9_-]{0,62}"
NAME = rf"^{NAME_PART}$"
MANIFEST = "_MANIFEST.json"  # written last: a folder without it is not published
# the one file of a published folder that may change after publishing: a model card grows as the
# artifact is evaluated and promoted. It is outside the digest (which names the weights and data,
# and keys caches); its manifest entry follows each rewrite, so every file still verifies.
CARD = "README.md"
DEPLOYMENTS = "deployments"  # each deployment's `<name>.json`; the gateway lists them


def artifact_prefix(kind: str, name: str, version: str) -> str:
    return f"{kind}/{name}/{version}"


def ref_key(kind: str, name: str) -> str:
    return f"refs/{kind}/{name}.json"


def registry_key(adapter: str) -> str:
    return f"registry/{adapter}.json"


def deployment_key(name: str) -> str:
    """{"deployment", "base_model", "base_version", "adapters", "replicas": [{"url",
    "models"}], "published_at"}."""
    return f"{DEPLOYMENTS}/{name}.json"


TRANSCRIPTS = "transcripts"


def transcript_key(model: str, version: str, recording_sha256: str) -> str:
    """{"file", "model", "duration", "document", "segments"}: a corpus reads it back instead of
    transcribing an unchanged recording again."""
    return f"{TRANSCRIPTS}/{model}@{version[:16]}/{recording_sha256}.json"


def speech_card_key(model: str) -> str:
    """A speech model's card (its word error rate), written by its transcription evaluation."""
    return f"cards/{model}/{CARD}"
