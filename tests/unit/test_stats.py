"""Statistics on synthetic samples."""

import math
import random

import pytest

from natbench.stats import equal_weight, median_interval, median_ci, quantile, summarize


def test_quantile_interpolates_like_numpy():
    data = [4.0, 1.0, 3.0, 2.0]
    assert quantile(data, 0.5) == 2.5
    assert quantile(data, 0.0) == 1.0 and quantile(data, 1.0) == 4.0
    assert quantile(data, 0.25) == pytest.approx(1.75)


def test_median_ci_uses_binomial_order_statistics():
    data = list(range(1, 11))  # n = 10: 95% interval is [X(2), X(9)], coverage 97.9%
    assert median_ci(data) == (2, 9)
    assert median_ci([5.0, 1.0, 3.0]) == (1.0, 5.0)  # too few samples: the full range


@pytest.mark.parametrize("n", [6, 15, 40])
def test_median_ci_covers_the_true_median_at_least_95_percent(n):
    rng = random.Random(n)
    hits = sum(low <= 0.0 <= high for low, high in
               (median_ci([rng.gauss(0, 1) for _ in range(n)]) for _ in range(2000)))
    assert hits / 2000 >= 0.94


def test_summarize_reports_every_field():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0, 2.0, 3.0, 2.0, 3.0, 2.5])
    assert s.n == 10 and s.min == 1.0 and s.median == 2.75
    assert s.mean == pytest.approx(12.25)
    assert s.ci_low <= s.median <= s.ci_high
    assert s.p10 <= s.median <= s.p90 and s.iqr > 0
    assert s.relative_ci == pytest.approx((s.ci_high - s.ci_low) / 2 / s.median)


def test_equal_weight_gives_every_group_the_smallest_groups_size():
    rng = random.Random(5)
    big = [rng.gauss(10, 1) for _ in range(500)]
    small = [rng.gauss(20, 1) for _ in range(20)]
    pooled = equal_weight([big, small])
    assert len(pooled) == 40
    # half the pool from each group: the median falls between them, not inside the big one
    assert sum(x < 15 for x in pooled) == 20
    # a group is represented by its own quantiles: its median survives the thinning
    assert abs(quantile(pooled[:20], 0.5) - quantile(big, 0.5)) < 0.2


def _lognormal_rounds(rng, n, spread=0.1):
    """n round medians of a machine whose state varies between rounds by `spread` (log sd)."""
    return [math.exp(rng.gauss(0, spread)) for _ in range(n)]


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 10])
def test_median_interval_covers_the_true_median_at_least_95_percent(n):
    rng = random.Random(100 + n)
    trials = [median_interval(_lognormal_rounds(rng, n)) for _ in range(2000)]
    assert all(low <= median <= high for median, low, high, _ in trials)
    assert sum(low <= 1.0 <= high for _, low, high, _ in trials) / 2000 >= 0.94
    assert {method for *_, method in trials} == {"order-statistics" if n >= 6 else "log-t"}


def test_median_interval_edge_cases():
    assert median_interval([2.0]) == (2.0, 2.0, 2.0, "single")
    assert median_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0, "log-t")
    median, low, high, _ = median_interval([1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 7.0])
    assert (median, low, high) == (4.0, 1.0, 7.0)
    with pytest.raises(ValueError):
        median_interval([])
