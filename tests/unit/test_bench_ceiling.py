"""The benchmark's storm ceiling: the model's rate times incidents per distinct incident."""

from __future__ import annotations

import math

import pytest
from bench.ceiling import ratio_bound, storm_ceiling


def test_ceiling_scales_the_model_rate_by_incidents_per_distinct_incident() -> None:
    # 10,000 reports of 1,050 distinct incidents, a model at 600 texts/s
    assert storm_ceiling(600.0, 10_000, 1_050) == pytest.approx(5_714.3, abs=0.1)
    # all-unique traffic: the ceiling is the model itself
    assert storm_ceiling(600.0, 2_000, 2_000) == 600.0


def test_ratio_bound_is_the_ceiling_over_the_naive_throughput() -> None:
    assert ratio_bound(5_714.3, 470.0) == pytest.approx(12.16, abs=0.01)


@pytest.mark.parametrize(
    ("rate", "incidents", "distinct"),
    [(0.0, 10, 5), (600.0, 0, 5), (600.0, 10, 0), (math.nan, 10, 5), (600.0, 10, math.nan)],
)
def test_missing_figures_give_no_ceiling(rate: float, incidents: float, distinct: float) -> None:
    assert math.isnan(storm_ceiling(rate, incidents, distinct))


@pytest.mark.parametrize("naive", [0.0, math.nan])
def test_no_naive_figure_gives_no_bound(naive: float) -> None:
    assert math.isnan(ratio_bound(5_000.0, naive))
    assert math.isnan(ratio_bound(math.nan, 400.0))
