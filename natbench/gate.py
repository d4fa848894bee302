"""The regression gate: a current run against a committed baseline, case by case and backend by
backend. Pure bookkeeping over loaded results (rendering is in console.py). A policy over the one
decision rule of verdict.py: the pairing, the test and the drift estimate are its.

Rules (each finding names its row):
- latency regresses when `verdict.decide` calls the current row slower than the baseline's (Welch's
  t on their log round medians, alpha 0.05) AND the ratio is more than the threshold above 1 AND
  every round of the current row (rounds are spread over the whole run) is itself above the
  threshold: an episode of the machine that slows one round is noise, a slower kernel is slower in
  every round. The threshold of a row is never below the spread the baseline saw between its own
  repeats (`natbench baseline update` records it), so a baseline's noise cannot fail a change.
  Faster by as much is reported as an improvement and never fails.
- drift correction (on by default): a shared machine drifts as a whole between runs (whole runs
  of unchanged code come out 10-30% slower than their baseline on a 2-core VM, every row alike).
  A backend's rows are divided by its drift (`verdict.drift_between`): the median ratio of the
  other backends' rows, bounded by the runs' matmul calibration; with no other backend, the
  calibration. A backend's own slowdown never divides itself out, and a change that slows every
  backend alike is bounded by the calibration.
- `normalize`: each run's latencies are multiplied by its own calibrated matmul FLOP/s for the
  row's device and dtype (time in units of "matmuls of this machine"), so a baseline from one
  machine can gate another of the same kind. It cancels a uniformly faster or slower machine; it
  cannot cancel a different memory system, core count or microarchitecture.
- confirmation (`natbench gate --suite --confirm N`, off by default): when a run the gate made has
  latency regressions, the suite runs N times more and each run is gated alike (its own drift
  factors and calibration); a regression stands only if every one of them finds it too, and is
  otherwise `unconfirmed`, listed and not failed. A machine's slow state can outlast a whole
  gate run (one smoke gate of unchanged code had torch fwdbwd at 16x16 +30-43% in all three
  rounds, the ten gates after it within the threshold); a slower kernel is slower in every run.
- memory and FLOPs are deterministic: memory fails above its tight threshold, FLOPs on any change.
- correctness: a current row outside its dtype tolerance fails; a row that was ok and is now
  skipped, error, oom or timeout fails.
- a case the baseline has and the current run lacks fails (a gate must not pass because a case
  vanished); a case only the current run has is listed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from natbench.errors import ResultsError
from natbench.stats import latency_fields
from natbench.verdict import FASTER, SLOWER, UNKNOWN, Drift, decide, drift_between


@dataclass(frozen=True)
class Thresholds:
    latency: float = 0.10
    memory: float = 0.02
    flops: float = 0.0

    @classmethod
    def parse(cls, options: list[str] | None, base: Thresholds | None = None) -> Thresholds:
        """`metric=fraction` options (`latency=0.2`) over `base`."""
        values = asdict(base or cls())
        for option in options or []:
            metric, _, text = option.partition("=")
            if metric not in values:
                raise ResultsError(f"--threshold {option!r}: the metrics are {', '.join(values)}.")
            try:
                value = float(text)
            except ValueError:
                raise ResultsError(f"--threshold {option!r}: {text!r} is not a number; e.g. "
                                   f"--threshold latency=0.2 for 20%.") from None
            if value < 0:
                raise ResultsError(f"--threshold {option!r}: a threshold is a fraction >= 0.")
            values[metric] = value
        return cls(**values)


@dataclass
class Finding:
    case_key: str
    backend: str
    metric: str  # latency, memory, flops, correctness, status, missing
    outcome: str  # regression, improvement, unchanged, unknown, new, unconfirmed (see confirm)
    baseline: float | str | None
    current: float | str | None
    change: float | None  # current / baseline - 1
    threshold: float | None
    p_value: float | None
    message: str

    @property
    def fails(self) -> bool:
        return self.outcome == "regression"


@dataclass
class GateResult:
    baseline_path: str
    current_path: str
    normalized: bool
    drifts: dict[str, Drift] = field(default_factory=dict)  # per backend; empty: no correction
    findings: list[Finding] = field(default_factory=list)

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.fails]

    @property
    def improvements(self) -> list[Finding]:
        return [f for f in self.findings if f.outcome == "improvement"]

    @property
    def unconfirmed(self) -> list[Finding]:
        return [f for f in self.findings if f.outcome == "unconfirmed"]

    @property
    def changed(self) -> list[Finding]:
        return [f for f in self.findings if f.outcome != "unchanged"]

    def to_record(self) -> dict:
        return {"baseline": self.baseline_path, "current": self.current_path,
                "normalized": self.normalized,
                "drift": {b: asdict(d) for b, d in self.drifts.items()}, "passed": not self.regressions,
                "regressions": len(self.regressions), "improvements": len(self.improvements),
                "unconfirmed": len(self.unconfirmed),
                "findings": [asdict(f) for f in self.findings]}


def _scale(results, row: dict, normalize: bool) -> float:
    """Multiplier of a row's latencies: 1, or its run's matmul FLOP/s when normalizing."""
    if not normalize:
        return 1.0
    calibration = results.calibration(row["device"], row["dtype"])
    if calibration is None:
        raise ResultsError(f"{results.path}: no calibration record for {row['device']} "
                           f"{row['dtype']} (row {row['backend']} {row['case_key']}); --normalize "
                           f"needs one; re-record the file with natbench run.")
    return calibration["matmul_flops_per_s"]


def _units(baseline, current, base_row: dict, cur_row: dict, normalize: bool) -> float:
    """What a current / baseline latency ratio is multiplied by to be in the gate's units: 1, or
    the ratio of the runs' matmul rates when normalizing."""
    return _scale(current, cur_row, normalize) / _scale(baseline, base_row, normalize)


def _latency(key, backend, base_row, cur_row, thresholds, normalize, units: float,
             drift: Drift | None) -> Finding:
    factor = (drift.factor if drift else 1.0) / units
    d = decide(base_row, cur_row, b_factor=factor)
    noise = repeat_spread(base_row)
    threshold = max(thresholds.latency, noise)
    if d.verdict == UNKNOWN:
        return Finding(key, backend, "latency", "unknown", base_row["latency_ms_median"],
                       cur_row["latency_ms_median"], None, threshold, None, f"no verdict: {d.reason}")
    change = d.ratio - 1
    rounds = [m / factor / base_row["latency_ms_median"] - 1 for m in cur_row["round_medians_ms"]]
    unit = ("normalized " if normalize else "") + (f"/{drift.factor:.3f} drift " if drift else "")
    words = (f"{unit}{change:+.1%} [{d.ratio_low - 1:+.1%}, {d.ratio_high - 1:+.1%}] (threshold "
             f"{threshold:.0%}{', raised to the baseline repeats spread' if noise > thresholds.latency else ''}; "
             f"{d.test} p = {d.p_value:.2g} on {d.rounds[0]} and {d.rounds[1]} rounds; rounds "
             f"{', '.join(f'{r:+.0%}' for r in rounds)})")
    if d.verdict == SLOWER and change > threshold and all(r > threshold for r in rounds):
        outcome = "regression"
    elif d.verdict == FASTER and change < -threshold and all(r < -threshold for r in rounds):
        outcome = "improvement"
    else:
        outcome = "unchanged"
    return Finding(key, backend, "latency", outcome, base_row["latency_ms_median"],
                   cur_row["latency_ms_median"], change, threshold, d.p_value, words)


def _deterministic(key, backend, metric, base_value, cur_value, threshold) -> Finding | None:
    if base_value is None or cur_value is None:
        return None
    if base_value == cur_value:
        return Finding(key, backend, metric, "unchanged", base_value, cur_value, 0.0, threshold, None,
                       f"{metric} unchanged")
    change = cur_value / base_value - 1 if base_value else float("inf")
    outcome = "regression" if change > threshold else ("improvement" if change < -threshold else "unchanged")
    if metric == "flops":
        outcome = "regression"  # a different FLOP count means a different problem or formula
    return Finding(key, backend, metric, outcome, base_value, cur_value, change, threshold, None,
                   f"{metric} {base_value:.6g} -> {cur_value:.6g} ({change:+.1%}, threshold {threshold:.0%})")


def gate(baseline, current, thresholds: Thresholds, normalize: bool = False,
         correct_drift: bool = True) -> GateResult:
    """All findings of the current results against the baseline results (both loaded)."""
    base_rows = {(r["case_key"], r["backend"]): r for r in baseline.rows}
    cur_rows = {(r["case_key"], r["backend"]): r for r in current.rows}
    def units(base_row: dict, cur_row: dict) -> float:
        return _units(baseline, current, base_row, cur_row, normalize)

    drifts = drift_between(baseline, current, units, normalize) if correct_drift else {}
    result = GateResult(str(baseline.path), str(current.path), normalize, drifts)
    add = result.findings.append
    for (key, backend), base in base_rows.items():
        cur = cur_rows.get((key, backend))
        if cur is None:
            add(Finding(key, backend, "missing", "regression", base["status"], None, None, None, None,
                        f"in the baseline, missing from {current.path}"))
            continue
        if cur.get("check") == "fail":
            add(Finding(key, backend, "correctness", "regression", base.get("max_abs_error"),
                        cur.get("max_abs_error"), None, cur.get("tolerance"), None,
                        f"max abs error {cur.get('max_abs_error'):.3g} is over the "
                        f"{cur['dtype']} tolerance {cur.get('tolerance'):.3g}"))
        if base["status"] != "ok":
            continue
        if cur["status"] != "ok":
            add(Finding(key, backend, "status", "regression", "ok", cur["status"], None, None, None,
                        f"was ok, now {cur['status']}: {cur.get('reason')}"))
            continue
        add(_latency(key, backend, base, cur, thresholds, normalize, units(base, cur), drifts.get(backend)))
        for metric, field_name, threshold in (("memory", "peak_memory_bytes", thresholds.memory),
                                              ("flops", "flops", thresholds.flops)):
            finding = _deterministic(key, backend, metric, base.get(field_name), cur.get(field_name), threshold)
            if finding is not None:
                add(finding)
    for (key, backend), cur in cur_rows.items():
        if (key, backend) not in base_rows:
            add(Finding(key, backend, "missing", "new", None, cur["status"], None, None, None,
                        f"new in {current.path}, not in the baseline"))
    return result


def confirm(result: GateResult, again: list[GateResult]) -> None:
    """Keep each latency regression of `result` only if the gate of every later run of the same
    suite (`again`: each a whole run, judged on its own drift factor and calibration, since the
    machine's state is what may have changed) finds it too; otherwise it is `unconfirmed`. A
    rerun that lacks the row refutes nothing. Regressions only a rerun found are not added: the
    first run is the gate, the others only confirm."""
    for finding in result.regressions:
        if finding.metric != "latency":
            continue
        seen = [f for rerun in again for f in rerun.findings
                if (f.case_key, f.backend, f.metric) == (finding.case_key, finding.backend, "latency")]
        if not seen:
            continue
        finding.message += "; measured again: " + ", ".join(f"{f.change:+.1%}" for f in seen)
        if any(f.outcome != "regression" for f in seen):
            finding.outcome = "unconfirmed"


def repeat_spread(row: dict) -> float:
    """How far a baseline row's repeats moved apart (max / min - 1): the row's noise floor. The
    repeats' medians with each repeat's drift from the first divided out where the baseline
    holds them (`repeat_drift_corrected_ms`), else as they were."""
    medians = row.get("repeat_drift_corrected_ms") or row.get("repeat_medians_ms") or []
    return max(medians) / min(medians) - 1 if len(medians) > 1 else 0.0


def _repeat_drifts(repeats: list) -> list[dict[str, float]]:
    """Per repeat, per backend, its drift from the first repeat (verdict.drift_between): a
    baseline's repeats see the machine in different states, which its noise floor must not
    count as the row's own spread."""
    return [{b: d.factor for b, d in drift_between(repeats[0], results).items()} for results in repeats]


def merge_repeats(repeats: list) -> tuple[dict, list[dict], list[dict]]:
    """(header, calibrations, rows) of a baseline from several runs of one suite: per row the
    samples of every repeat pooled (one weight per repeat), the CI spanning the repeats' CIs,
    the round medians of every repeat (each an independent draw, for the decision rule),
    `repeat_medians_ms` and `repeat_drift_corrected_ms` (the same with each repeat's drift
    divided out: their spread is the gate's noise floor for the row)."""
    first = repeats[0]
    drifts = _repeat_drifts(repeats)
    rows = []
    for row in first.rows:
        key = (row["case_key"], row["backend"])
        same = [r for results in repeats for r in results.rows if (r["case_key"], r["backend"]) == key]
        merged = dict(row)
        if all(r["status"] == "ok" for r in same) and len(same) == len(repeats):
            ci = (min(r["latency_ms_ci_low"] for r in same) * 1e-3, max(r["latency_ms_ci_high"] for r in same) * 1e-3)
            merged.update(latency_fields([r["samples_s"] for r in same], ci),
                          repeat_medians_ms=[r["latency_ms_median"] for r in same],
                          repeat_drift_corrected_ms=[r["latency_ms_median"] / d.get(row["backend"], 1.0)
                                                     for r, d in zip(same, drifts)],
                          round_medians_ms=[m for r in same for m in r.get("round_medians_ms") or []],
                          rounds=sum(r.get("rounds") or 0 for r in same), round_indices=None,
                          peak_memory_bytes=max(r["peak_memory_bytes"] for r in same))
            merged["tflops"] = merged["flops"] / (merged["latency_ms_median"] * 1e-3) / 1e12
            if row.get("pct_of_peak") is not None:
                merged["pct_of_peak"] = row["pct_of_peak"] * row["latency_ms_median"] / merged["latency_ms_median"]
        else:
            bad = next((r for r in same if r["status"] != "ok"), None)
            if bad is not None:
                merged = dict(bad)
        rows.append(merged)
    header = {k: v for k, v in first.header.items() if k not in ("record", "schema")}
    header["baseline"] = {"repeats": len(repeats), "files": [str(r.path) for r in repeats]}
    return header, first.calibrations, rows
