"""Have live prompts drifted from the prompts an adapter learnt from?

Both sides are embedded with the platform's embedding model; the statistic is the energy
distance between the two clouds of embeddings (Székely and Rizzo: zero exactly when the two
distributions are equal, sensitive to any difference, no binning or dimension reduction), and
its p-value comes from `scipy.stats.permutation_test` over the pooled sample. scipy is already a
dependency and maintained; the alternatives (alibi-detect's MMD, hyppo) bring TensorFlow or
numba for one test. The pairwise distances are computed once; each permutation only re-indexes
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import permutation_test


@dataclass(frozen=True)
class Drift:
    statistic: float  # energy distance between the samples' embeddings
    p_value: float
    recent: int  # prompts in each sample
    reference: int
    drifted: tuple[int, ...]  # indexes of the recent prompts farthest from the reference

    def as_metadata(self) -> dict[str, float | int]:
        return {"energy_distance": round(self.statistic, 5), "p_value": round(self.p_value, 5),
                "recent_prompts": self.recent, "reference_prompts": self.reference}


def energy_test(recent: np.ndarray, reference: np.ndarray, resamples: int = 999,
                seed: int = 0, shown: int = 5) -> Drift:
    """Energy distance of `recent` (n x d) from `reference` (m x d) and its permutation
    p-value; the `shown` recent rows farthest from their nearest reference row."""
    pooled = np.vstack([recent, reference])
    distances = cdist(pooled, pooled)
    n = len(recent)

    def energy(x: np.ndarray, y: np.ndarray) -> float:
        return float(2 * distances[np.ix_(x, y)].mean() - distances[np.ix_(x, x)].mean()
                     - distances[np.ix_(y, y)].mean())

    result = permutation_test((np.arange(n), np.arange(n, len(pooled))), energy,
                              permutation_type="independent", vectorized=False,
                              n_resamples=resamples, alternative="greater",
                              random_state=np.random.default_rng(seed))
    nearest = distances[:n, n:].min(axis=1)
    return Drift(float(result.statistic), float(result.pvalue), n, len(reference),
                 tuple(int(i) for i in np.argsort(-nearest)[:shown]))
