"""Statistics of timing samples. Pure functions on lists of floats: no torch.

Summaries are derived from the raw samples when needed (pyperf's and torch.utils.benchmark's
habit); nothing here rounds or converts units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache


def quantile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), q in [0, 1]."""
    if not samples:
        raise ValueError("quantile of no samples")
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The number of samples below the true median is Binomial(n, 1/2); the interval runs from the
    j-th to the k-th smallest sample with j, k the binomial's two-sided quantiles. With fewer than
    6 samples no order statistics give 95%: the interval is then the full range.
    """
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        raise ValueError("confidence interval of no samples")
    j = _order_statistic(n, confidence)
    if j < 1:
        return ordered[0], ordered[-1]
    return ordered[j - 1], ordered[n - j]


@lru_cache(maxsize=None)
def _order_statistic(n: int, confidence: float) -> int:
    """j of median_ci's [X(j), X(n-j+1)] (1-based), which covers the median with
    1 - 2 P(B <= j-1), B ~ Binomial(n, 1/2): the largest j with P(B <= j-1) <= alpha/2 is the
    binomial's alpha/2 quantile."""
    from scipy.stats import binom

    return int(binom.ppf((1.0 - confidence) / 2, n, 0.5))


@lru_cache(maxsize=None)
def _t_quantile(df: int, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, str]:
    """(median, ci_low, ci_high, method) of independent positive values: a row's round medians
    (the rounds, minutes apart, are its independent draws of the machine's state; samples of one
    burst are not), or the samples of a row measured in one round.

    With 6 or more values the interval is median_ci's order statistics (`order-statistics`).
    Fewer cannot reach 95% without assuming a distribution: the interval is then Student's t on
    the logs (`log-t`: latencies are positive and skewed), widened to contain the median if it
    must be. One value has no spread to estimate (`single`: the point).
    """
    n = len(values)
    if n == 0:
        raise ValueError("median of no values")
    middle = quantile(values, 0.5)
    if n >= 6:
        low, high = median_ci(values, confidence)
        return middle, low, high, "order-statistics"
    if n == 1:
        return middle, middle, middle, "single"
    logs = [math.log(v) for v in values]
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = _t_quantile(n - 1, confidence) * sd / math.sqrt(n)
    return middle, min(math.exp(mean - half), middle), max(math.exp(mean + half), middle), "log-t"


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    min: float
    p10: float
    p90: float
    iqr: float
    ci_low: float
    ci_high: float

    @property
    def relative_ci(self) -> float:
        """Half-width of the median's CI relative to the median: the stopping rule's noise."""
        return (self.ci_high - self.ci_low) / 2 / self.median if self.median > 0 else math.inf

    @property
    def relative_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else math.inf


def summarize(samples: Sequence[float], confidence: float = 0.95) -> Summary:
    ci_low, ci_high = median_ci(samples, confidence)
    return Summary(n=len(samples), median=quantile(samples, 0.5),
                   mean=sum(samples) / len(samples), min=min(samples),
                   p10=quantile(samples, 0.1), p90=quantile(samples, 0.9),
                   iqr=quantile(samples, 0.75) - quantile(samples, 0.25),
                   ci_low=ci_low, ci_high=ci_high)


def equal_weight(groups: Sequence[Sequence[float]]) -> list[float]:
    """Pool groups of samples (rounds, repeats) with one weight per group: each group is thinned
    to the smallest group's size by its own quantiles at (i + 0.5) / m. The adaptive sampler takes
    more samples exactly when the machine is noisy, so pooling raw samples would let the noisiest
    round decide the median."""
    size = min(len(g) for g in groups)
    return [quantile(g, (i + 0.5) / size) for g in groups for i in range(size)]


def latency_fields(groups: Sequence[Sequence[float]], ci: tuple[float, float] | None = None,
                   median: float | None = None) -> dict:
    """The latency fields of a result row from its samples (seconds), in one group per round or
    repeat: counts and every raw sample, the summary in ms with each group weighted equally, and
    the median with its 95% CI (their own, or `median` and `ci` when the caller estimates them
    from the groups)."""
    raw = [s for g in groups for s in g]
    summary = summarize(equal_weight(groups) if len(groups) > 1 else raw)
    ci_low, ci_high = ci or (summary.ci_low, summary.ci_high)
    return {
        "samples": len(raw), "samples_s": raw,
        "latency_ms_median": (summary.median if median is None else median) * 1e3,
        "latency_ms_mean": summary.mean * 1e3,
        "latency_ms_min": summary.min * 1e3, "latency_ms_p10": summary.p10 * 1e3,
        "latency_ms_p90": summary.p90 * 1e3, "latency_ms_iqr": summary.iqr * 1e3,
        "latency_ms_ci_low": ci_low * 1e3, "latency_ms_ci_high": ci_high * 1e3,
    }
