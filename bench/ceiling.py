"""The most any server can do on a storm, set by the embedding model alone.

A storm's repeats can skip the model, but each distinct incident needs one forward pass.
A server that embedded each distinct incident once, at the model's best batched rate,
and spent nothing on anything else (HTTP, search, storage, the load generator's share of
the cores) would answer ``model rate x incidents / distinct incidents`` per second. That
ceiling bounds the optimized/naive ratio too, because the naive server runs the same
model: it is at most the ceiling over the naive throughput.
"""

from __future__ import annotations

import math


def storm_ceiling(model_texts_per_s: float, incidents: float, distinct: float) -> float:
    """Incidents/s at best: the model's rate times the incidents per distinct incident
    (nan when any figure is missing or not positive)."""
    if not all(math.isfinite(x) and x > 0 for x in (model_texts_per_s, incidents, distinct)):
        return math.nan
    return model_texts_per_s * incidents / distinct


def ratio_bound(ceiling: float, naive_throughput: float) -> float:
    """The largest optimized/naive ratio the ceiling allows (nan without a naive figure)."""
    if not (math.isfinite(ceiling) and math.isfinite(naive_throughput) and naive_throughput > 0):
        return math.nan
    return ceiling / naive_throughput
