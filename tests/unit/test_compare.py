"""Comparisons: pairing rows by case, verdicts through the one rule, drift between runs, summary."""

from types import SimpleNamespace

import pytest

from natbench.compare import FASTER, SAME, SLOWER, UNKNOWN, calls_by_chance, compare_backends, compare_runs
from tests import synthetic


def _row(backend, kernel, median, machine=None, seed=0, **extra):
    return {**synthetic.row(backend, kernel, median, seed=seed, machine=machine), **extra}


def _run(rows, calibration=1e11):
    return SimpleNamespace(rows=rows, probes=[],
                           calibrations=[{"device": "cpu", "dtype": "float32", "matmul_flops_per_s": calibration}])


def test_backends_pair_on_the_same_case_key_so_kernel_k_meets_window_k():
    machine = [1.0, 1.3, 0.9, 1.1, 1.0, 1.2, 0.95, 1.05]  # one run: every backend sees it
    rows = [_row("natten", 7, 2e-3, machine, seed=1), _row("swin", 7, 1e-3, machine, seed=2, peak_memory_bytes=1 << 19),
            _row("natten", 9, 3e-3, machine, seed=3), _row("swin", 9, 3e-3, machine, seed=4)]
    [comparison] = compare_backends(rows, "natten", ["swin"])
    by_k = {p.a["kernel_size"][0]: p for p in comparison.pairs}
    assert by_k[7].b["backend"] == "swin" and by_k[7].b["kernel_size"] == by_k[7].a["kernel_size"]
    assert by_k[7].verdict == FASTER and by_k[7].memory_ratio == 0.5 and by_k[7].test == "paired-t"
    assert by_k[9].verdict == SAME
    summary = comparison.summary
    assert (summary.wins, summary.losses, summary.ties, summary.unknown) == (1, 0, 1, 0)
    assert summary.worst is by_k[9]
    assert summary.geomean == pytest.approx((by_k[7].ratio * by_k[9].ratio) ** 0.5)
    assert summary.geomean_low < summary.geomean < summary.geomean_high


@pytest.mark.parametrize("b_row, words", [
    (None, "no row in swin"),
    ({"status": "skipped"}, "swin skipped: cannot"),
    ({"check": "fail"}, "wrong answer"),
    ({"round_medians_ms": None}, "no round medians"),
])
def test_a_pair_that_cannot_be_judged_is_unknown_with_its_reason(b_row, words):
    rows = [_row("natten", 7, 2e-3)]
    if b_row is not None:
        status = b_row.get("status", "ok")
        rows.append({**synthetic.row("swin", 7, 1e-3, status=status, check=b_row.get("check", "pass")),
                     **{k: v for k, v in b_row.items() if k not in ("status", "check")}})
    [comparison] = compare_backends(rows, "natten", ["swin"])
    [pair] = comparison.pairs
    assert pair.verdict == UNKNOWN and words in pair.reason and pair.ratio is None
    assert comparison.summary.n == 0 and comparison.summary.unknown == 1


def test_two_runs_pair_by_case_and_backend_and_list_what_is_missing():
    before = _run([_row("natten", 7, 1e-3, seed=1), _row("torch", 7, 2e-3, seed=2)])
    after = _run([_row("natten", 7, 1.5e-3, seed=3), _row("natten", 9, 1e-3, seed=4)])
    comparisons = {c.a_label: c for c in compare_runs(before, after, "a", "b")}
    natten = {p.a["kernel_size"][0] if p.a else 9: p for p in comparisons["natten @ a"].pairs}
    assert natten[7].verdict == SLOWER and natten[7].test == "welch-t"
    assert natten[9].verdict == UNKNOWN and "no row in a" in natten[9].reason
    [torch_pair] = comparisons["torch @ a"].pairs
    assert torch_pair.verdict == UNKNOWN and "no row in b" in torch_pair.reason


def _sweep(factors, seed, machine=1.0, backends=("natten", "torch", "swin", "sdpa")):
    return [_row(b, k, 1e-3 * k * machine * factors.get(b, 1.0), seed=seed + 10 * k + i)
            for k in (3, 5, 7, 9) for i, b in enumerate(backends)]


def test_a_whole_machine_shift_between_two_runs_is_divided_out_and_one_backends_change_is_not():
    before = _run(_sweep({}, seed=0))
    after = _run(_sweep({"natten": 1.3}, seed=100, machine=1.2))  # the machine 1.2x, natten 1.3x more
    comparisons = {c.a_label.split(" @ ")[0]: c for c in compare_runs(before, after, "a", "b")}
    assert comparisons["natten"].summary.losses == 4
    assert comparisons["natten"].summary.geomean == pytest.approx(1.3, rel=0.03)
    assert comparisons["natten"].drift.factor == pytest.approx(1.2, rel=0.02)
    for name in ("torch", "swin", "sdpa"):
        assert comparisons[name].summary.ties == 4
    raw = {c.a_label.split(" @ ")[0]: c for c in compare_runs(before, after, "a", "b", correct_drift=False)}
    assert raw["torch"].summary.losses == 4 and raw["torch"].drift is None
    assert calls_by_chance(list(comparisons.values())).called == 4
