"""How a GRPO step's time splits between sampling replies and the rest (scoring, the reference
model's forward pass, the update): TRL times each generation call under its profiling names
but only hands the times to W&B, MLflow or Trackio. Installed in the training process (ours and
bench/trl_grpo_baseline.py's alike), it adds `generation_seconds` to each logged step, so the
trainer's log history (and the adapter's metadata) carries the split without any tracker.
"""

from __future__ import annotations

from typing import Any

GENERATION = ("transformers.generate", "transformers.generate_batch", "vLLM.generate",
              "sync_weights")  # TRL's profiling names for sampling (and vLLM's weight sync)
_spent: dict[str, float] = {"generation": 0.0}


def install() -> None:
    from trl import GRPOTrainer
    from trl.extras import profiling

    timed = profiling.ProfilingContext._log_metrics
    log = GRPOTrainer.log

    def _log_metrics(self: Any, duration: float) -> None:
        if self.name.endswith(GENERATION):
            _spent["generation"] += duration
        timed(self, duration)

    def log_with_generation(self: Any, logs: dict[str, float], *args: Any, **kwargs: Any
                            ) -> None:
        if _spent["generation"] and self.model.training:
            logs["generation_seconds"] = round(_spent["generation"], 3)
            _spent["generation"] = 0.0
        log(self, logs, *args, **kwargs)

    profiling.ProfilingContext._log_metrics = _log_metrics
    GRPOTrainer.log = log_with_generation
