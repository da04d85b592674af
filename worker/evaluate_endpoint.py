"""Score what is actually served: each test row's conversation (up to its last assistant turn)
sent to the deployment's chat API, the reply scored as the offline evaluation scores it
(worker/harness_metrics.py), plus time to first token and time per output token from streamed
requests. The server applies its own chat template and stops, as it does for every app.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from worker.chat import conversation, question_of, scored_rows
from worker.harness_metrics import REPLY_METRICS, extract, scored_doc
from worker.pipes import open_pipes


def authorization() -> dict[str, str]:
    """The replica's key (VLLM_API_KEY, as vLLM names it) when the replica is private."""
    key = os.environ.get("VLLM_API_KEY")
    return {"authorization": f"Bearer {key}"} if key else {}


def reply_of(client: Any, url: str, model: str, messages: list[dict[str, str]],
             max_tokens: int) -> str:
    response = client.post(f"{url}/v1/chat/completions", json={
        "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"] or ""


def score_endpoint(url: str, model: str, rows: list[dict[str, Any]], params: dict[str, Any]
                   ) -> dict[str, Any]:
    """The served model's replies to `rows` (four requests at a time) scored by every reply
    metric that is a mean over replies (worker/harness_metrics.py)."""
    import httpx

    pattern = params.get("answer_pattern")
    served = {name: metric for name, metric in REPLY_METRICS.items() if metric.served}
    split = [conversation(row) for row in rows]
    with (httpx.Client(timeout=300, headers=authorization()) as client,
          ThreadPoolExecutor(4) as pool):
        replies = list(pool.map(lambda item: reply_of(
            client, url, model, item[0], params["max_new_tokens"]), split))
    samples = []
    for (history, reference), reply in zip(split, replies, strict=True):
        doc = scored_doc(pattern, reference)
        scores = {name: round(metric.score(doc, reply), 4) for name, metric in served.items()}
        samples.append({"question": question_of(history), "target": doc["answer"],
                        "output": reply, "extracted": extract(pattern, reply),
                        "correct": bool(scores["exact_match"]), **scores})
    return {**{name: statistics.fmean(s[name] for s in samples) for name in served},
            "samples": samples}


def stream_timings(url: str, model: str, conversations: list[list[dict[str, str]]],
                   max_tokens: int) -> dict[str, float]:
    """TTFT and TPOT as a client sees them, one streamed request at a time."""
    import httpx

    ttft, tpot = [], []
    with httpx.Client(timeout=120, headers=authorization()) as client:
        for messages in conversations:
            body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                    "stream_options": {"include_usage": True}, "messages": messages}
            started = time.perf_counter()
            first = None
            tokens = 0
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
                    if first is None and chunk.get("choices") and \
                            chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter()
            done = time.perf_counter()
            if first is None:
                continue
            ttft.append(first - started)
            if tokens > 1:
                tpot.append((done - first) / (tokens - 1))
    return {
        "ttft_mean_s": statistics.fmean(ttft) if ttft else float("nan"),
        "ttft_p95_s": sorted(ttft)[int(0.95 * (len(ttft) - 1))] if ttft else float("nan"),
        "tpot_mean_s": statistics.fmean(tpot) if tpot else float("nan"),
        "requests": len(ttft),
    }


def main() -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        out_dir = Path(params["output_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = scored_rows(Path(params["test_path"]))[: params["limit"]]
        timed = [conversation(r)[0] for r in rows[: params["timing_requests"]]]
        results = {}
        for model in params["models"]:
            pipes.log.info(f"evaluating served model {model} at {params['url']} "
                           f"on {len(rows)} test rows")
            result = score_endpoint(params["url"], model, rows, params)
            result |= stream_timings(params["url"], model, timed, params["max_new_tokens"])
            results[model] = result
            pipes.log.info(f"{model}: exact_match={result['exact_match']:.3f} "
                           f"rougeL={result['rougeL']:.3f} "
                           f"ttft={result['ttft_mean_s'] * 1000:.0f}ms "
                           f"tpot={result['tpot_mean_s'] * 1000:.1f}ms")
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
