"""Case-by-case comparison of a candidate against a baseline: ratios, verdicts and a summary.

Pure bookkeeping over result rows (rendering lives in console.py). Two sources of pairs:
backends of one run (B against A on the same case: for NA against Swin, kernel K meets window
K, since a case's kernel_size is the window of the `wsa` backends), judged on their rounds paired
side by side; and the same backend in two runs (`natbench compare a.jsonl b.jsonl`), judged after
dividing out the machine's drift between the runs, estimated from the other backends. Every
verdict comes from `verdict.decide`; a pair that did not run on both sides, or whose answer was
wrong, is "unknown", never a win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from natbench.store import case_order
from natbench.verdict import (FASTER, SAME, SLOWER, UNKNOWN, Decision, Drift, chance_calls, decide,
                              drift_between)


@dataclass
class Pair:
    """One case: the baseline's row `a` and the candidate's row `b` (either may be missing)."""

    case_key: str
    label: str | None
    a: dict | None
    b: dict | None
    verdict: str = UNKNOWN
    reason: str | None = None
    memory_ratio: float | None = None
    decision: Decision | None = None  # the rule's answer, when both sides could be judged

    @property
    def any_row(self) -> dict:
        return self.a or self.b

    # The ratio B/A, its CI, the test and its p-value: the decision's, or None without one.
    ratio = property(lambda self: self.decision and self.decision.ratio)
    ratio_low = property(lambda self: self.decision and self.decision.ratio_low)
    ratio_high = property(lambda self: self.decision and self.decision.ratio_high)
    p_value = property(lambda self: self.decision and self.decision.p_value)
    test = property(lambda self: self.decision and self.decision.test)

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
                "test": self.test, "memory_ratio": self.memory_ratio}


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
    drift: Drift | None = None  # two runs: what B's latencies were divided by
    summary: Summary = field(init=False)

    def __post_init__(self):
        self.summary = summarize(self.pairs)

    def to_record(self) -> dict:
        drift = None if self.drift is None else {"factor": self.drift.factor, "source": self.drift.source,
                                                 "controls": self.drift.controls,
                                                 "unbounded": self.drift.unbounded}
        return {"baseline": self.a_label, "candidate": self.b_label, "drift": drift,
                "summary": self.summary.to_record(), "cases": [p.to_record() for p in self.pairs]}


def _unusable(row: dict | None, side: str) -> str | None:
    if row is None:
        return f"no row in {side}"
    if row["status"] != "ok":
        return f"{side} {row['status']}: {row.get('reason')}"
    if row.get("check") == "fail":
        return (f"{side} computed a wrong answer (max abs error {row.get('max_abs_error'):.3g}); "
                f"its time is not a result")
    if not row.get("round_medians_ms"):
        return f"{side} has no round medians (a results file older than rounds)"
    return None


def judge(pair: Pair, a_name: str, b_name: str, same_run: bool, b_factor: float = 1.0) -> Pair:
    """Fills in the verdict of one pair (unknown with a reason when a side can't be used)."""
    reason = _unusable(pair.a, a_name) or _unusable(pair.b, b_name)
    if reason:
        pair.verdict, pair.reason = UNKNOWN, reason
        return pair
    pair.decision = decide(pair.a, pair.b, same_run, b_factor)
    pair.verdict, pair.reason = pair.decision.verdict, pair.decision.reason
    if pair.a.get("peak_memory_bytes") and pair.b.get("peak_memory_bytes") is not None:
        pair.memory_ratio = pair.b["peak_memory_bytes"] / pair.a["peak_memory_bytes"]
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


# When a run's declared baseline did not run, or it declares none: the first of these that did.
FALLBACK_BASELINES = ("swin", "sdpa", "torch", "natten")


def pick_baseline(backends: list[str], declared: str | None, asked: str | None = None) -> tuple[str, str]:
    """The backend the others are compared with, and why that one: `asked` (--baseline), else the
    suite's declared baseline when it ran, else the first of FALLBACK_BASELINES that ran, else
    the first by name. Never the first backend of a file by accident."""
    from natbench.errors import ResultsError

    if asked is not None:
        if asked not in backends:
            raise ResultsError(f"--baseline {asked}: no rows of that backend here; backends: "
                               f"{', '.join(backends)}.")
        return asked, "--baseline"
    if declared in backends:
        return declared, "the suite's baseline"
    missing = f"the suite's baseline {declared} did not run; " if declared else ""
    for name in FALLBACK_BASELINES:
        if name in backends:
            return name, f"{missing}the first of {', '.join(FALLBACK_BASELINES)} that ran"
    return sorted(backends)[0], f"{missing}the first by name: none of {', '.join(FALLBACK_BASELINES)} ran"


def run_baselines(results_list, asked: str | None = None) -> dict[str, tuple[str, str]]:
    """Each loaded run's baseline and why (pick_baseline), keyed by its file's stem: --baseline
    where that run has it, else the baseline its suite declared (recorded in its header)."""
    picked = {}
    for results in results_list:
        backends = list(dict.fromkeys(r["backend"] for r in results.rows))
        if not backends:
            continue
        picked[results.path.stem] = pick_baseline(backends, results.header.get("baseline"),
                                                  asked if asked in backends else None)
    if asked is not None and not any(why == "--baseline" for _, why in picked.values()):
        from natbench.errors import ResultsError

        raise ResultsError(f"--baseline {asked}: no run here has rows of that backend.")
    return picked


def compare_backends(rows: list[dict], baseline: str, candidates: list[str]) -> list[Comparison]:
    """Each candidate backend against the baseline backend on the cases of one run, in case order."""
    by_case: dict[str, dict[str, dict]] = {}
    labels: dict[str, str | None] = {}
    for row in sorted(rows, key=case_order):
        by_case.setdefault(row["case_key"], {})[row["backend"]] = row
        labels[row["case_key"]] = row.get("label")
    comparisons = []
    for candidate in candidates:
        pairs = [judge(Pair(key, labels[key], cells.get(baseline), cells.get(candidate)),
                       baseline, candidate, same_run=True) for key, cells in by_case.items()]
        comparisons.append(Comparison(baseline, candidate, pairs))
    return comparisons


def compare_runs(a, b, a_name: str, b_name: str, correct_drift: bool = True) -> list[Comparison]:
    """The same backends in two loaded runs, case by case; one comparison per backend in either
    run. With `correct_drift`, each backend's second-run latencies are divided by its drift
    (verdict.drift_between: the other backends' shift, bounded by the calibration)."""
    def index(rows):
        return {(r["case_key"], r["backend"]): r for r in rows}

    rows_a, rows_b = index(a.rows), index(b.rows)
    backends = list(dict.fromkeys(r["backend"] for r in [*a.rows, *b.rows]))
    keys = list(dict.fromkeys(r["case_key"] for r in sorted([*a.rows, *b.rows], key=case_order)))
    drifts = drift_between(a, b) if correct_drift else {}
    comparisons = []
    for backend in backends:
        drift = drifts.get(backend)
        pairs = []
        for key in keys:
            row_a, row_b = rows_a.get((key, backend)), rows_b.get((key, backend))
            if row_a is None and row_b is None:
                continue
            label = (row_a or row_b).get("label")
            pairs.append(judge(Pair(key, label, row_a, row_b), a_name, b_name, same_run=False,
                               b_factor=drift.factor if drift else 1.0))
        comparisons.append(Comparison(f"{backend} @ {a_name}", f"{backend} @ {b_name}", pairs, drift))
    return comparisons


def calls_by_chance(comparisons: list[Comparison]):
    """How many of two runs' rows were called faster or slower against what chance alone gives
    (verdict.chance_calls): for two runs of the same code, the check that the verdicts hold."""
    return chance_calls([p.decision for c in comparisons for p in c.pairs if p.decision is not None])
