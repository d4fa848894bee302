"""The comparison's decision rule on synthetic samples, pairing rules and the summary."""

import random

import pytest

from natbench.compare import FASTER, SAME, SLOWER, UNKNOWN, agreement, compare_backends, compare_runs, decide
from natbench.stats import median_ci, quantile


def _samples(median, noise=0.01, n=200, seed=0):
    rng = random.Random(seed)
    return [median * (1 + rng.gauss(0, noise)) for _ in range(n)]


def test_equal_distributions_are_no_significant_difference():
    # Many independent draws: the rule must not cry wolf on the same distribution.
    verdicts = [decide(_samples(1e-3, seed=2 * i), _samples(1e-3, seed=2 * i + 1)).verdict
                for i in range(40)]
    assert verdicts.count(SAME) >= 38


@pytest.mark.parametrize("factor, expected", [(1.05, SLOWER), (1.5, SLOWER), (1 / 1.05, FASTER),
                                              (0.5, FASTER)])
def test_real_differences_are_found_with_their_direction(factor, expected):
    v = decide(_samples(1e-3, seed=1), _samples(1e-3 * factor, seed=2))
    assert v.verdict == expected
    assert v.ratio == pytest.approx(factor, rel=0.01)
    assert v.ratio_low < v.ratio < v.ratio_high and v.p_value < 0.05


def test_a_difference_inside_the_noise_is_not_significant():
    v = decide(_samples(1e-3, noise=0.2, n=20, seed=3), _samples(1.05e-3, noise=0.2, n=20, seed=4))
    assert v.verdict == SAME


def test_ratio_interval_comes_from_the_two_median_intervals():
    a, b = _samples(1.0, seed=5), _samples(2.0, seed=6)
    (a_low, a_high), (b_low, b_high) = median_ci(a), median_ci(b)
    v = decide(a, b)
    assert v.ratio_low == pytest.approx(b_low / a_high) and v.ratio_high == pytest.approx(b_high / a_low)
    assert v.ratio == pytest.approx(quantile(b, 0.5) / quantile(a, 0.5))


def _row(backend, key, median, status="ok", check="pass", memory=1000, seed=0, **extra):
    samples = _samples(median, seed=seed)
    low, high = median_ci(samples)
    return {"backend": backend, "case_key": key, "label": None, "status": status, "reason": None if status == "ok" else "why",
            "check": check, "max_abs_error": 0.5 if check == "fail" else 0.0, "samples_s": samples,
            "latency_ms_median": quantile(samples, 0.5) * 1e3, "latency_ms_ci_low": low * 1e3,
            "latency_ms_ci_high": high * 1e3, "peak_memory_bytes": memory, "tflops": 1.0,
            "resolution": [56, 56], "kernel_size": [int(key[1:])] * 2, **extra}


def test_backends_pair_on_the_same_case_key_so_kernel_k_meets_window_k():
    rows = [_row("natten", "k7", 2e-3, seed=1), _row("swin", "k7", 1e-3, seed=2, memory=500),
            _row("natten", "k9", 3e-3, seed=3), _row("swin", "k9", 3e-3, seed=3)]
    [comparison] = compare_backends(rows, "natten", ["swin"])
    by_key = {p.case_key: p for p in comparison.pairs}
    assert by_key["k7"].a["backend"] == "natten" and by_key["k7"].b["backend"] == "swin"
    assert by_key["k7"].b["kernel_size"] == by_key["k7"].a["kernel_size"]
    assert by_key["k7"].verdict == FASTER and by_key["k7"].memory_ratio == 0.5
    assert by_key["k9"].verdict == SAME
    summary = comparison.summary
    assert (summary.wins, summary.losses, summary.ties, summary.unknown) == (1, 0, 1, 0)
    assert summary.worst.case_key == "k9"
    assert summary.geomean == pytest.approx((by_key["k7"].ratio * by_key["k9"].ratio) ** 0.5)
    assert summary.geomean_low < summary.geomean < summary.geomean_high


@pytest.mark.parametrize("b_row, words", [
    (None, "no row in swin"),
    ({"status": "skipped"}, "swin skipped: why"),
    ({"check": "fail"}, "wrong answer"),
])
def test_a_pair_that_cannot_be_judged_is_unknown_with_its_reason(b_row, words):
    rows = [_row("natten", "k7", 2e-3)]
    if b_row is not None:
        rows.append(_row("swin", "k7", 1e-3, **b_row))
    [comparison] = compare_backends(rows, "natten", ["swin"])
    [pair] = comparison.pairs
    assert pair.verdict == UNKNOWN and words in pair.reason and pair.ratio is None
    assert comparison.summary.n == 0 and comparison.summary.unknown == 1


def test_two_runs_pair_by_case_and_backend_and_list_what_is_missing():
    before = [_row("natten", "k7", 1e-3, seed=1), _row("torch", "k7", 2e-3, seed=2)]
    after = [_row("natten", "k7", 1.5e-3, seed=3), _row("natten", "k9", 1e-3, seed=4)]
    comparisons = {c.a_label: c for c in compare_runs(before, after, "a", "b")}
    natten = {p.case_key: p for p in comparisons["natten @ a"].pairs}
    assert natten["k7"].verdict == SLOWER and natten["k9"].verdict == UNKNOWN
    assert "no row in a" in natten["k9"].reason
    [torch_pair] = comparisons["torch @ a"].pairs
    assert torch_pair.verdict == UNKNOWN and "no row in b" in torch_pair.reason


def test_agreement_counts_rows_whose_medians_lie_in_each_others_ci():
    def with_ci(row, low, median, high):
        return {**row, "latency_ms_ci_low": low, "latency_ms_median": median, "latency_ms_ci_high": high}

    def one_sample(row):
        return {**row, "samples_s": row["samples_s"][:1], "ci_method": "samples/single"}

    base = _row("natten", "k7", 1e-3)
    before = [with_ci(base, 0.99, 1.0, 1.01), with_ci({**base, "case_key": "k9"}, 0.99, 1.0, 1.01),
              with_ci({**base, "case_key": "k11"}, 0.99, 1.0, 1.01),
              one_sample(with_ci({**base, "case_key": "k13"}, 1.0, 1.0, 1.0))]
    after = [with_ci(base, 0.995, 1.005, 1.02),  # each inside the other
             with_ci({**base, "case_key": "k9"}, 1.001, 1.005, 1.05),  # A's median below B's CI
             with_ci({**base, "case_key": "k11"}, 1.0, 1.02, 1.03),  # B's median above A's CI
             one_sample(with_ci({**base, "case_key": "k13"}, 1.001, 1.001, 1.001))]
    result = agreement(compare_runs(before, after, "a", "b"))
    assert (result.rows, result.inside, result.single) == (4, 1, 1)
    assert result.by_backend == {"natten": (1, 4)} and result.fraction == 0.25
    assert agreement(compare_runs(before, before, "a", "a")).inside == 4


def test_agreement_also_says_how_many_rows_agree_once_a_whole_run_shift_is_divided_out():
    def with_ci(key, low, median, high):
        return {**_row("natten", key, 1e-3), "case_key": key, "latency_ms_ci_low": low,
                "latency_ms_median": median, "latency_ms_ci_high": high}

    before = [with_ci(f"k{k}", 0.99 * k, k, 1.01 * k) for k in (3, 5, 7)]
    shifted = [with_ci(f"k{k}", 1.3 * 0.99 * k, 1.3 * k, 1.3 * 1.01 * k) for k in (3, 5)]
    odd = [with_ci("k7", 1.6 * 0.99 * 7, 1.6 * 7, 1.6 * 1.01 * 7)]  # this row moved on its own
    result = agreement(compare_runs(before, shifted + odd, "a", "b"))
    assert result.inside == 0 and result.drift == pytest.approx(1.3)
    assert result.inside_without_drift == 2 and result.rows == 3
    assert result.to_record()["inside_without_drift"] == 2


def test_agreement_says_what_a_steady_machine_would_give_rows_of_their_rounds():
    from natbench.stats import steady_agreement

    def row(key, rounds):
        return {**_row("natten", key, 1e-3), "case_key": key, "rounds": rounds,
                "latency_ms_ci_low": 0.9, "latency_ms_median": 1.0, "latency_ms_ci_high": 1.1}

    before = [row("k3", 8), row("k5", 3), row("k7", 1)]  # k7: one round, a CI of its samples
    after = [row("k3", 8), row("k5", 3), row("k7", 1)]
    result = agreement(compare_runs(before, after, "a", "b"))
    expected = (steady_agreement(8, 8) + steady_agreement(3, 3)) / 2
    assert result.steady_rows == 2 and result.steady == pytest.approx(expected)
    assert 0.8 < result.steady < 0.9 < steady_agreement(8, 8)
    assert result.steady_sd == pytest.approx(
        (steady_agreement(8, 8) * (1 - steady_agreement(8, 8))
         + steady_agreement(3, 3) * (1 - steady_agreement(3, 3))) ** 0.5 / 2)
    # files from before the rounds field: nothing to expect
    old = [{k: v for k, v in r.items() if k != "rounds"} for r in before]
    assert agreement(compare_runs(old, old, "a", "b")).steady is None


def test_machine_shift_needs_most_backends_moved_the_same_way():
    from types import SimpleNamespace

    from natbench.compare import Summary, machine_shift

    def backend(geomean, low, high):
        return SimpleNamespace(summary=Summary(15, geomean, low, high, 0, 0, 15, 0, None))

    slower = [backend(1.2, 1.1, 1.3), backend(1.13, 1.09, 1.17), backend(1.28, 1.2, 1.35)]
    unclear = backend(0.95, 0.85, 1.06)
    assert machine_shift([*slower, unclear]) == (3, 4, 1.13, 1.28)
    assert machine_shift(slower[:2] + [unclear]) is None  # two moved: could be the code
    assert machine_shift([*slower, backend(0.8, 0.7, 0.9)]) is None  # one moved the other way
    assert machine_shift([*slower, unclear, unclear, unclear, unclear]) is None  # 3 of 7 only
