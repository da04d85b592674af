"""Score what is actually served: the harness's OpenAI-compatible client against a deployment,
plus time to first token and time per output token from streamed requests.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from worker.evaluate import TASK, write_tasks
from worker.pipes import open_pipes


def harness_via_endpoint(url: str, model: str, params: dict[str, Any], task_dir: Path
                         ) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="local-chat-completions",
        model_args={"model": model, "base_url": f"{url}/v1/chat/completions",
                    "num_concurrent": 4, "max_retries": 2, "tokenizer_backend": None,
                    "tokenized_requests": False},
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir)),
        limit=params["limit"],
        apply_chat_template=True,
        system_instruction=params["system_prompt"],
        log_samples=True,
    )
    metrics = out["results"][TASK]
    return {"exact_match": metrics["exact_match,extract"],
            "samples": [{"question": s["doc"]["question"], "target": s["target"],
                         "output": s["resps"][0][0], "correct": bool(s["exact_match"])}
                        for s in out["samples"][TASK]]}


def stream_timings(url: str, model: str, prompts: list[str], system: str, max_tokens: int
                   ) -> dict[str, float]:
    """TTFT and TPOT as a client sees them, one streamed request at a time."""
    import httpx

    ttft, tpot = [], []
    with httpx.Client(timeout=120) as client:
        for prompt in prompts:
            body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": prompt}]}
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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # the harness reads the key only from here
    with open_pipes() as pipes:
        params = pipes.extras
        out_dir = Path(params["output_dir"])
        rows = [json.loads(line) for line in Path(params["test_path"]).read_text().splitlines()]
        write_tasks(out_dir / "task", rows, params["max_new_tokens"], [], 4)
        prompts = [next(m["content"] for m in r["messages"] if m["role"] == "user")
                   for r in rows[: params["timing_requests"]]]
        results = {}
        for model in params["models"]:
            pipes.log.info(f"evaluating served model {model} at {params['url']}")
            result = harness_via_endpoint(params["url"], model, params, out_dir / "task")
            result |= stream_timings(params["url"], model, prompts, params["system_prompt"],
                                     params["max_new_tokens"])
            results[model] = result
            pipes.log.info(f"{model}: exact_match={result['exact_match']:.3f} "
                           f"ttft={result['ttft_mean_s'] * 1000:.0f}ms "
                           f"tpot={result['tpot_mean_s'] * 1000:.1f}ms")
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
