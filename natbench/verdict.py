"""The one decision rule: B against A from their round medians, and the machine's drift between
two runs estimated from what a change cannot have touched.

`compare`, `gate` and `report` all judge through `decide`; the gate adds a policy on top
(thresholds, the every-round rule, the noise floor, confirmation) and nothing else.

Why round medians. Samples taken back to back share the machine's state of that moment, so
hundreds of them are not hundreds of independent draws, and a test on pooled samples calls noise
significant. A row's rounds are spread over the whole run: their medians are its independent
draws, and the test runs on them (on their logs: latencies are positive and skewed, and a ratio
is a difference of logs).

- **Paired** (two backends of one run, measured side by side in the same rounds): a one-sample t
  test on the rounds' log ratios B/A. The machine's state of a round hits both alike and cancels.
- **Unpaired** (one backend in two runs): Welch's t test on the two sides' log round medians.
- The ratio is exp(mean log difference) with its 95% t interval; the verdict is `faster` or
  `slower` when p < alpha, which is when that interval excludes 1. A side with fewer than 2
  rounds gives no evidence of spread: the verdict is `unknown`, never a guess.

Drift. Two runs see the machine in different states, and rounds of one run cannot show it. The
factor a backend's rows are divided by (`drift_factors`) comes from controls: the *other*
backends' rows, never the rows under test, so a change to one backend cannot divide itself out
(with four or more backends, one changed backend does not move the others' drift either). It is bounded by the runs' matmul calibration (within DRIFT_MARGIN of it), so a
change that slows every backend alike cannot pass as drift either. With fewer than two other
backends the calibration alone is the control. "Calibration" here is the median of the matmul
probes taken at the start of every round (calibrate.probe), or, in files without them, the
calibration taken once at the start of the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from natbench.stats import quantile

ALPHA = 0.05
FASTER, SLOWER, SAME, UNKNOWN = "faster", "slower", "no significant difference", "unknown"
# How far the other backends' drift may stray from the matmul probes' before the probes' bound
# is what divides. Between two runs the probes of every round came within 4% of the rows' drift
# on a quiet VM, and a slow state of a busy one moved torch 1.44x against a matmul's 1.19x: 25%
# admits that and still holds a uniform change of every backend beyond 1.25x to account
# (docs/methodology.md).
DRIFT_MARGIN = 0.25
# Fewer control rows, or other backends, than these say too little about the machine: the
# calibration is used instead. One other backend would turn a change of either into the opposite
# change of the other.
MIN_CONTROLS = 4
MIN_OTHER_BACKENDS = 2


@dataclass(frozen=True)
class Decision:
    verdict: str
    ratio: float | None  # B / A
    ratio_low: float | None  # its 95% CI
    ratio_high: float | None
    p_value: float | None
    test: str  # "paired-t", "welch-t" or "none"
    rounds: tuple[int, int]  # the draws on each side
    reason: str | None = None  # why the verdict is unknown


def round_draws(row: dict) -> tuple[list[float], list[int] | None]:
    """A row's round medians (seconds) and the rounds they come from (None where the row does not
    say). A baseline merged from repeats holds the rounds of every repeat."""
    medians = [m * 1e-3 for m in row.get("round_medians_ms") or []]
    indices = row.get("round_indices")
    return medians, (list(indices) if indices is not None and len(indices) == len(medians) else None)


def _t_decision(mean: float, se: float, df: float, rounds: tuple[int, int], test: str,
                alpha: float) -> Decision:
    from scipy.stats import t

    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        half = 0.0
    else:
        p = float(2 * t.sf(abs(mean) / se, df))
        half = float(t.ppf(1 - alpha / 2, df)) * se
    verdict = SAME if p >= alpha else (SLOWER if mean > 0 else FASTER)
    return Decision(verdict, math.exp(mean), math.exp(mean - half), math.exp(mean + half), p, test,
                    rounds)


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def decide_draws(a: Sequence[float], b: Sequence[float], paired: bool = False,
                 alpha: float = ALPHA) -> Decision:
    """B against A from their draws (round medians, positive). `paired`: a[i] and b[i] were
    measured in the same round."""
    rounds = (len(a), len(b))
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired draws need equal counts, got {len(a)} and {len(b)}")
        if len(a) < 2:
            return Decision(UNKNOWN, None, None, None, None, "none", rounds,
                            "fewer than 2 rounds measured side by side: no evidence of spread")
        diffs = [math.log(y) - math.log(x) for x, y in zip(a, b)]
        mean, var = _mean_var(diffs)
        return _t_decision(mean, math.sqrt(var / len(diffs)), len(diffs) - 1, rounds, "paired-t", alpha)
    if min(rounds) < 2:
        return Decision(UNKNOWN, None, None, None, None, "none", rounds,
                        f"{min(rounds)} round on a side: no evidence of spread (run 2 or more, "
                        f"--rounds)")
    (ma, va), (mb, vb) = _mean_var([math.log(x) for x in a]), _mean_var([math.log(y) for y in b])
    sa, sb = va / len(a), vb / len(b)
    se = math.sqrt(sa + sb)
    # Welch-Satterthwaite degrees of freedom (when both sides are constant any df will do)
    df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1)) if se else 1.0
    return _t_decision(mb - ma, se, df, rounds, "welch-t", alpha)


def decide(a_row: dict, b_row: dict, same_run: bool = False, b_factor: float = 1.0,
           alpha: float = ALPHA) -> Decision:
    """B's row against A's from their round medians. `same_run`: both rows come from one run, so
    rounds of the same index were measured side by side and are paired (when both rows say which
    rounds they hold, or both hold every round alike). `b_factor` divides B's latencies (drift,
    and the normalization of two machines' units)."""
    a, a_index = round_draws(a_row)
    b, b_index = round_draws(b_row)
    b = [x / b_factor for x in b]
    if same_run and len(a) == len(b) and a_index == b_index:
        return decide_draws(a, b, paired=True, alpha=alpha)
    if same_run and a_index is not None and b_index is not None:
        common = sorted(set(a_index) & set(b_index))
        if len(common) >= 2:
            a_at, b_at = dict(zip(a_index, a)), dict(zip(b_index, b))
            return decide_draws([a_at[i] for i in common], [b_at[i] for i in common], paired=True,
                                alpha=alpha)
    return decide_draws(a, b, alpha=alpha)


@dataclass(frozen=True)
class Drift:
    """The factor a backend's rows of the second run are divided by, and where it came from."""

    factor: float
    source: str  # "other backends", "calibration" or "none"
    controls: int  # rows it is the median of (0: the calibration, or nothing)
    unbounded: float | None = None  # the other backends' factor when the calibration bounded it

    def text(self) -> str:
        if self.source == "none":
            return "no drift correction"
        bound = (f", bounded by the calibration (the other backends said {self.unbounded:.3f}x)"
                 if self.unbounded is not None else "")
        where = f"the other backends' {self.controls} rows" if self.controls else "the matmul calibration"
        return f"drift {self.factor:.3f}x from {where}{bound}"


def calibration_ratio(a_calibrations: Sequence[dict], b_calibrations: Sequence[dict],
                      a_probes: Sequence[dict] = (), b_probes: Sequence[dict] = ()) -> float | None:
    """What the runs' matmul measurements say the second run's latencies are to the first's: per
    (device, dtype) both measured, the first run's rate over the second's, from the median of the
    probes of every round where both runs have them (calibrate.probe), else from the calibration
    taken once at the start; the median over the (device, dtype); None when they share none."""
    def rates(calibrations, probes):
        out = {(c["device"], c["dtype"]): c["matmul_flops_per_s"] for c in calibrations}
        by_kind: dict[tuple[str, str], list[float]] = {}
        for p in probes:
            by_kind.setdefault((p["device"], p["dtype"]), []).append(p["matmul_flops_per_s"])
        return out, {kind: quantile(values, 0.5) for kind, values in by_kind.items()}

    (a_cal, a_probe), (b_cal, b_probe) = rates(a_calibrations, a_probes), rates(b_calibrations, b_probes)
    ratios = []
    for kind in a_cal.keys() | a_probe.keys():
        if kind in a_probe and kind in b_probe:
            ratios.append(a_probe[kind] / b_probe[kind])
        elif kind in a_cal and kind in b_cal:
            ratios.append(a_cal[kind] / b_cal[kind])
    return quantile(ratios, 0.5) if ratios else None


def drift_factors(ratios: dict[str, list[float]], calibration: float | None,
                  margin: float = DRIFT_MARGIN, min_controls: int = MIN_CONTROLS) -> dict[str, Drift]:
    """Per backend, the drift its rows of the second run are divided by.

    `ratios`: per backend, its rows' second-run / first-run median ratios (already in the units
    the comparison uses). `calibration`: what the matmul calibration says the same ratio is for
    the machine (1.0 when latencies are normalized by it; None when there is none). A backend's
    drift is the median over the other backends of each one's median ratio (one vote a backend,
    so that one changed backend among three or more others cannot move it), bounded to within
    `margin` of the calibration; with fewer than `min_controls` rows or MIN_OTHER_BACKENDS other
    backends, the calibration."""
    votes = {backend: quantile(values, 0.5) for backend, values in ratios.items() if values}
    drifts = {}
    for backend in ratios:
        controls = sum(len(values) for other, values in ratios.items() if other != backend)
        if controls < min_controls or len([b for b in votes if b != backend]) < MIN_OTHER_BACKENDS:
            drifts[backend] = (Drift(calibration, "calibration", 0) if calibration is not None
                               else Drift(1.0, "none", 0))
            continue
        factor = quantile([v for other, v in votes.items() if other != backend], 0.5)
        if calibration is not None:
            low, high = calibration / (1 + margin), calibration * (1 + margin)
            if not low <= factor <= high:
                drifts[backend] = Drift(min(max(factor, low), high), "other backends", controls,
                                        factor)
                continue
        drifts[backend] = Drift(factor, "other backends", controls)
    return drifts


def drift_between(first, second, units=None, normalized: bool = False) -> dict[str, Drift]:
    """Per backend, the drift from one loaded run to another (drift_factors): every pair of rows
    measured in both that ran and computed the right answer gives its ratio of medians, times
    `units(first_row, second_row)` where the comparison works in other units; the control is the
    runs' probes or calibration (calibration_ratio), or 1 when latencies are normalized by it."""
    def usable(row: dict) -> bool:
        return row["status"] == "ok" and row.get("check") != "fail"

    firsts = {(r["case_key"], r["backend"]): r for r in first.rows if usable(r)}
    ratios: dict[str, list[float]] = {}
    for row in second.rows:
        base = firsts.get((row["case_key"], row["backend"]))
        if base is not None and usable(row):
            ratio = row["latency_ms_median"] / base["latency_ms_median"]
            ratios.setdefault(row["backend"], []).append(ratio * (units(base, row) if units else 1.0))
    machine = 1.0 if normalized else calibration_ratio(first.calibrations, second.calibrations,
                                                       first.probes, second.probes)
    return drift_factors(ratios, machine)


@dataclass(frozen=True)
class ChanceCalls:
    """Of `judged` comparisons, `called` faster or slower; `expected` of them by chance alone if
    nothing changed (alpha x judged); `p_excess`: the chance of calling that many or more."""

    judged: int
    called: int
    expected: float
    p_excess: float

    @property
    def too_many(self) -> bool:
        """More calls than chance explains (p < 0.01): if nothing changed, the rounds understate
        how much this machine moves between runs."""
        return self.p_excess < 0.01


def chance_calls(decisions: Sequence[Decision], alpha: float = ALPHA) -> ChanceCalls:
    from scipy.stats import binom

    judged = [d for d in decisions if d.verdict != UNKNOWN]
    called = sum(d.verdict in (FASTER, SLOWER) for d in judged)
    p = float(binom.sf(called - 1, len(judged), alpha)) if judged else 1.0
    return ChanceCalls(len(judged), called, alpha * len(judged), p)
