"""Case-by-case comparison of a candidate against a baseline: ratios, verdicts and a summary.

Pure bookkeeping over result rows (rendering lives in console.py). Two sources of pairs:
backends of one run (B against A on the same case: for NA against Swin, kernel K meets window
K, since a case's kernel_size is the window of the `wsa` backends) and the same backend in two
runs (`natbench compare a.jsonl b.jsonl`), which also reports how often the two runs' medians
fall inside each other's CI (`agreement`).

The verdict follows pyperf and asv: a difference is reported only when it is significant on the
kept samples (two-sided Mann-Whitney U, alpha 0.05) AND the ratio's 95% CI excludes 1. The
ratio's CI is built from the two medians' CIs (estimated from the run's rounds, so drift of
the machine widens them): [B low / A high, B high / A low], conservative. A pair that did not run on
both sides, or whose answer was wrong, is "unknown", never a win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from natbench.stats import mann_whitney_p, median_ci, quantile, steady_agreement
from natbench.store import single_sample

ALPHA = 0.05
FASTER, SLOWER, SAME, UNKNOWN = "faster", "slower", "no significant difference", "unknown"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    ratio: float
    ratio_low: float
    ratio_high: float
    p_value: float


def decide(a_samples, b_samples, a_ci=None, b_ci=None, alpha: float = ALPHA,
           medians: tuple[float, float] | None = None) -> Verdict:
    """B against A from their samples: ratio of medians B/A, its CI, the test, the verdict.

    `a_ci`/`b_ci` and `medians` default to each side's own median and CI of its samples; rows
    pass theirs, estimated from their rounds.
    """
    a_ci = a_ci or median_ci(a_samples)
    b_ci = b_ci or median_ci(b_samples)
    a_median, b_median = medians or (quantile(a_samples, 0.5), quantile(b_samples, 0.5))
    ratio = b_median / a_median
    low, high = b_ci[0] / a_ci[1], b_ci[1] / a_ci[0]
    p = mann_whitney_p(a_samples, b_samples)
    if p < alpha and low > 1:
        verdict = SLOWER
    elif p < alpha and high < 1:
        verdict = FASTER
    else:
        verdict = SAME
    return Verdict(verdict, ratio, low, high, p)


@dataclass
class Pair:
    """One case: the baseline's row `a` and the candidate's row `b` (either may be missing)."""

    case_key: str
    label: str | None
    a: dict | None
    b: dict | None
    verdict: str = UNKNOWN
    reason: str | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    p_value: float | None = None
    memory_ratio: float | None = None

    @property
    def any_row(self) -> dict:
        return self.a or self.b

    def to_record(self) -> dict:
        def side(row):
            if row is None:
                return None
            return {key: row.get(key) for key in ("backend", "status", "reason", "latency_ms_median",
                                                  "latency_ms_ci_low", "latency_ms_ci_high",
                                                  "peak_memory_bytes", "tflops", "pct_of_peak",
                                                  "max_abs_error", "check")}

        return {"case_key": self.case_key, "label": self.label, "a": side(self.a), "b": side(self.b),
                "verdict": self.verdict, "reason": self.reason, "ratio": self.ratio,
                "ratio_ci": [self.ratio_low, self.ratio_high], "p_value": self.p_value,
                "memory_ratio": self.memory_ratio}


@dataclass
class Summary:
    n: int  # cases with a verdict other than unknown
    geomean: float | None
    geomean_low: float | None
    geomean_high: float | None
    wins: int  # the candidate is faster
    losses: int
    ties: int
    unknown: int
    worst: Pair | None  # the case with the largest ratio B/A

    def to_record(self) -> dict:
        return {"cases": self.n, "geomean_ratio": self.geomean,
                "geomean_ci": [self.geomean_low, self.geomean_high], "wins": self.wins,
                "losses": self.losses, "ties": self.ties, "unknown": self.unknown,
                "worst_case": None if self.worst is None else self.worst.case_key,
                "worst_ratio": None if self.worst is None else self.worst.ratio}


@dataclass
class Comparison:
    """Candidate `b_label` against baseline `a_label`, case by case, with its summary."""

    a_label: str
    b_label: str
    pairs: list[Pair]
    summary: Summary = field(init=False)

    def __post_init__(self):
        self.summary = summarize(self.pairs)

    def to_record(self) -> dict:
        return {"baseline": self.a_label, "candidate": self.b_label,
                "summary": self.summary.to_record(), "cases": [p.to_record() for p in self.pairs]}


def _unusable(row: dict | None, side: str) -> str | None:
    if row is None:
        return f"no row in {side}"
    if row["status"] != "ok":
        return f"{side} {row['status']}: {row.get('reason')}"
    if row.get("check") == "fail":
        return (f"{side} computed a wrong answer (max abs error {row.get('max_abs_error'):.3g}); "
                f"its time is not a result")
    if not row.get("samples_s"):
        return f"{side} has no samples"
    return None


def judge(pair: Pair, a_name: str, b_name: str) -> Pair:
    """Fills in the verdict of one pair (unknown with a reason when a side can't be used)."""
    reason = _unusable(pair.a, a_name) or _unusable(pair.b, b_name)
    if reason:
        pair.verdict, pair.reason = UNKNOWN, reason
        return pair
    a, b = pair.a, pair.b
    v = decide(a["samples_s"], b["samples_s"],
               (a["latency_ms_ci_low"] * 1e-3, a["latency_ms_ci_high"] * 1e-3),
               (b["latency_ms_ci_low"] * 1e-3, b["latency_ms_ci_high"] * 1e-3),
               medians=(a["latency_ms_median"] * 1e-3, b["latency_ms_median"] * 1e-3))
    pair.verdict, pair.ratio, pair.ratio_low, pair.ratio_high, pair.p_value = (
        v.verdict, v.ratio, v.ratio_low, v.ratio_high, v.p_value)
    if a.get("peak_memory_bytes") and b.get("peak_memory_bytes") is not None:
        pair.memory_ratio = b["peak_memory_bytes"] / a["peak_memory_bytes"]
    return pair


def summarize(pairs: list[Pair]) -> Summary:
    """Geometric-mean ratio over the judged cases with a t-interval on the log ratios (the
    case's own CI when there is one case), wins/losses/ties, and the worst case."""
    from scipy.stats import t

    judged = [p for p in pairs if p.verdict != UNKNOWN]
    counts = {v: sum(p.verdict == v for p in pairs) for v in (FASTER, SLOWER, SAME, UNKNOWN)}
    if not judged:
        return Summary(0, None, None, None, 0, 0, 0, counts[UNKNOWN], None)
    logs = [math.log(p.ratio) for p in judged]
    mean = sum(logs) / len(logs)
    if len(logs) == 1:
        low, high = judged[0].ratio_low, judged[0].ratio_high
    else:
        sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
        half = t.ppf(0.975, len(logs) - 1) * sd / math.sqrt(len(logs))
        low, high = math.exp(mean - half), math.exp(mean + half)
    worst = max(judged, key=lambda p: p.ratio)
    return Summary(len(judged), math.exp(mean), low, high, counts[FASTER], counts[SLOWER],
                   counts[SAME], counts[UNKNOWN], worst)


def compare_backends(rows: list[dict], baseline: str, candidates: list[str]) -> list[Comparison]:
    """Each candidate backend against the baseline backend on the cases of one run."""
    by_case: dict[str, dict[str, dict]] = {}
    labels: dict[str, str | None] = {}
    for row in rows:
        by_case.setdefault(row["case_key"], {})[row["backend"]] = row
        labels[row["case_key"]] = row.get("label")
    comparisons = []
    for candidate in candidates:
        pairs = [judge(Pair(key, labels[key], cells.get(baseline), cells.get(candidate)),
                       baseline, candidate) for key, cells in by_case.items()]
        comparisons.append(Comparison(baseline, candidate, pairs))
    return comparisons


def compare_runs(a_rows: list[dict], b_rows: list[dict], a_name: str, b_name: str) -> list[Comparison]:
    """The same backends in two runs, case by case; one comparison per backend in either run."""
    def index(rows):
        return {(r["case_key"], r["backend"]): r for r in rows}

    a, b = index(a_rows), index(b_rows)
    backends = list(dict.fromkeys(r["backend"] for r in [*a_rows, *b_rows]))
    keys = list(dict.fromkeys(r["case_key"] for r in [*a_rows, *b_rows]))
    comparisons = []
    for backend in backends:
        pairs = []
        for key in keys:
            row_a, row_b = a.get((key, backend)), b.get((key, backend))
            if row_a is None and row_b is None:
                continue
            label = (row_a or row_b).get("label")
            pairs.append(judge(Pair(key, label, row_a, row_b), a_name, b_name))
        comparisons.append(Comparison(f"{backend} @ {a_name}", f"{backend} @ {b_name}", pairs))
    return comparisons


@dataclass(frozen=True)
class Agreement:
    """How two runs of one suite agree, row by row: of the rows judged in both (ok, right answer),
    those whose median lies inside the other run's 95% CI and the other's inside theirs. A side
    with one sample has the point for its CI and so agrees only with an equal time: `single`
    counts such rows, which no run-to-run agreement can include."""

    rows: int
    inside: int
    single: int
    by_backend: dict[str, tuple[int, int]]  # backend -> (inside, rows)
    # The median over the rows of B's median / A's: the whole machine's shift between the runs,
    # and how many rows agree once B is divided by it (natbench gate's drift correction). A
    # diagnostic beside `inside`, never instead of it: it says whether the runs differ by one
    # factor, which no CI of a single run can see, or row by row.
    drift: float = 1.0
    inside_without_drift: int = 0
    # What a steady machine would give these rows (stats.steady_agreement of their round counts;
    # rows whose CI came from rounds in both runs): fewer rounds agree less often by their CI
    # alone, so the shortfall of `inside` below this is the machine's, not the statistics'.
    steady: float | None = None
    steady_sd: float | None = None  # its standard deviation over that many independent rows
    steady_rows: int = 0

    @property
    def fraction(self) -> float | None:
        return self.inside / self.rows if self.rows else None

    def to_record(self) -> dict:
        return {"rows": self.rows, "inside": self.inside, "fraction": self.fraction,
                "single_sample_rows": self.single,
                "by_backend": {b: {"inside": i, "rows": n} for b, (i, n) in self.by_backend.items()},
                "drift": self.drift, "inside_without_drift": self.inside_without_drift,
                "steady_fraction": self.steady, "steady_sd": self.steady_sd,
                "steady_rows": self.steady_rows}


def _agree(a: dict, b: dict, drift: float = 1.0) -> bool:
    """Each median inside the other's CI, B's latencies divided by `drift`."""
    b_low, b_median, b_high = (b[k] / drift for k in ("latency_ms_ci_low", "latency_ms_median",
                                                        "latency_ms_ci_high"))
    return (a["latency_ms_ci_low"] <= b_median <= a["latency_ms_ci_high"]
            and b_low <= a["latency_ms_median"] <= b_high)


def agreement(comparisons: list[Comparison]) -> Agreement:
    """The row-by-row agreement of two runs (`compare_runs`' comparisons): the check that the
    CIs are honest, since a 95% CI that misses the other run's median on most rows is too narrow
    for this machine's run-to-run drift."""
    judged = {c.a_label: [p for p in c.pairs if p.verdict != UNKNOWN] for c in comparisons}
    pairs = [p for backend_pairs in judged.values() for p in backend_pairs]
    if not pairs:
        return Agreement(0, 0, 0, {})
    drift = quantile([p.b["latency_ms_median"] / p.a["latency_ms_median"] for p in pairs], 0.5)
    by_backend = {ps[0].a["backend"]: (sum(_agree(p.a, p.b) for p in ps), len(ps))
                  for ps in judged.values() if ps}
    rounds = [(p.a["rounds"], p.b["rounds"]) for p in pairs
              if p.a.get("rounds", 1) > 1 and p.b.get("rounds", 1) > 1]
    chances = [steady_agreement(*r) for r in rounds]
    steady, steady_sd = ((sum(chances) / len(chances),
                          math.sqrt(sum(c * (1 - c) for c in chances)) / len(chances))
                         if chances else (None, None))
    return Agreement(len(pairs), sum(inside for inside, _ in by_backend.values()),
                     sum(single_sample(p.a) or single_sample(p.b) for p in pairs), by_backend,
                     drift, sum(_agree(p.a, p.b, drift) for p in pairs), steady, steady_sd,
                     len(rounds))


def machine_shift(comparisons: list[Comparison]) -> tuple[int, int, float, float] | None:
    """For backends compared across two runs: (moved, compared, lowest, highest geometric-mean
    ratio of the moved) when three or more and at least half of the backends moved beyond their
    geometric mean's CI, all the same way. A shift of the whole machine between the runs is then
    the likely cause rather than the code, which rarely changes most backends at once. None
    otherwise."""
    summaries = [c.summary for c in comparisons if c.summary.n and c.summary.geomean_low is not None]
    slower = [s.geomean for s in summaries if s.geomean_low > 1]
    faster = [s.geomean for s in summaries if s.geomean_high < 1]
    if slower and faster:
        return None
    moved = slower or faster
    if len(moved) < 3 or 2 * len(moved) < len(summaries):
        return None
    return len(moved), len(summaries), min(moved), max(moved)
