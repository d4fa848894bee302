"""natbench gate's decision rules on synthetic samples, and the baseline merge."""

import re

import pytest

from natbench import store
from natbench.errors import ResultsError
from natbench.gate import Thresholds, confirm, gate, merge_repeats, repeat_spread
from tests import synthetic


def _gate(tmp_path, base_rows, cur_rows, thresholds=Thresholds(), normalize=False, cur_env=None,
          cur_matmul=None, correct_drift=True):
    for name in ("base.jsonl", "cur.jsonl"):  # several gates in one test
        (tmp_path / name).unlink(missing_ok=True)
    base = store.load(synthetic.write(tmp_path / "base.jsonl", base_rows))
    current_path = synthetic.write(tmp_path / "cur.jsonl", cur_rows, cur_env)
    if cur_matmul is not None:  # another machine: rewrite the calibration's matmul rate
        text = current_path.read_text().replace('"matmul_flops_per_s":100000000000.0',
                                                f'"matmul_flops_per_s":{cur_matmul}')
        current_path.write_text(text)
    return gate(base, store.load(current_path), thresholds, normalize, correct_drift)


def _outcomes(result, metric="latency"):
    return [(f.backend, f.outcome) for f in result.findings if f.metric == metric]


@pytest.mark.parametrize("factor, outcome", [
    (1.0, "unchanged"),    # the same distribution: never a regression
    (1.05, "unchanged"),   # significant, but under the 10% threshold
    (1.3, "regression"),
    (1.5, "regression"),
    (0.7, "improvement"),  # reported, not failed
])
def test_latency_needs_the_threshold_and_significance(tmp_path, factor, outcome):
    result = _gate(tmp_path, [synthetic.row("torch", 7, 1e-3, seed=1)],
                   [synthetic.row("torch", 7, 1e-3 * factor, seed=2)])
    assert _outcomes(result) == [("torch", outcome)]
    assert bool(result.regressions) == (outcome == "regression")


def test_a_slowdown_within_noise_is_not_significant(tmp_path):
    result = _gate(tmp_path, [synthetic.row("torch", 7, 1e-3, noise=0.4, n=6, seed=1)],
                   [synthetic.row("torch", 7, 1.2e-3, noise=0.4, n=6, seed=2)])
    [finding] = [f for f in result.findings if f.metric == "latency"]
    assert finding.outcome == "unchanged" and finding.p_value >= 0.05


def test_the_baselines_own_repeat_spread_raises_the_threshold(tmp_path):
    noisy = synthetic.row("torch", 7, 1e-3, seed=1)
    noisy["repeat_medians_ms"] = [1.0, 1.25, 1.1]
    result = _gate(tmp_path, [noisy], [synthetic.row("torch", 7, 1.2e-3, seed=2)])
    [finding] = [f for f in result.findings if f.metric == "latency"]
    assert finding.threshold == pytest.approx(0.25) and finding.outcome == "unchanged"


@pytest.mark.parametrize("memory, outcome", [(1 << 20, "unchanged"), (int(1.01 * (1 << 20)), "unchanged"),
                                             (int(1.05 * (1 << 20)), "regression"), (2 << 20, "regression"),
                                             (1 << 19, "improvement")])
def test_memory_has_a_tight_threshold(tmp_path, memory, outcome):
    result = _gate(tmp_path, [synthetic.row("torch", 7, 1e-3, seed=1)],
                   [synthetic.row("torch", 7, 1e-3, seed=1, memory=memory)])
    assert _outcomes(result, "memory") == [("torch", outcome)]


def test_any_flop_change_fails(tmp_path):
    current = synthetic.row("torch", 7, 1e-3, seed=1)
    current["flops"] += 1
    result = _gate(tmp_path, [synthetic.row("torch", 7, 1e-3, seed=1)], [current])
    assert _outcomes(result, "flops") == [("torch", "regression")]


def test_wrong_answers_lost_rows_and_new_rows(tmp_path):
    base = [synthetic.row("torch", 7, 1e-3), synthetic.row("swin", 7, 1e-3, op="wsa"),
            synthetic.row("sdpa", 7, 1e-3, op="full")]
    current = [synthetic.row("torch", 7, 1e-3, check="fail"), synthetic.row("swin", 7, 1e-3, status="error"),
               synthetic.row("natten", 7, 1e-3)]
    result = _gate(tmp_path, base, current)
    failed = {(f.backend, f.metric) for f in result.regressions}
    assert failed == {("torch", "correctness"), ("swin", "status"), ("sdpa", "missing")}
    [new] = [f for f in result.findings if f.outcome == "new"]
    assert new.backend == "natten" and "not in the baseline" in new.message


def test_normalize_cancels_a_uniformly_slower_machine(tmp_path):
    base = [synthetic.row("torch", 7, 1e-3, seed=1)]
    half_speed = [synthetic.row("torch", 7, 2e-3, seed=2)]
    assert _gate(tmp_path, base, half_speed).regressions
    result = _gate(tmp_path, base, half_speed, normalize=True, cur_matmul=5e10)
    assert _outcomes(result) == [("torch", "unchanged")] and result.normalized


def _sweep_rows(factors, seed=0, backends=("torch", "swin")):
    """Rows of `backends` over K = 3..9, each `factors[backend]` x a base latency."""
    return [synthetic.row(b, k, 1e-3 * k * factors.get(b, 1.0), seed=seed + 10 * i + j)
            for i, k in enumerate((3, 5, 7, 9)) for j, b in enumerate(backends)]


FOUR = ("torch", "swin", "sdpa", "natten")


def test_drift_correction_cancels_a_whole_machine_slowdown_but_not_one_backend(tmp_path):
    base = _sweep_rows({}, seed=0, backends=FOUR)
    machine_slower = _sweep_rows({b: 1.2 for b in FOUR}, seed=100, backends=FOUR)
    assert len(_gate(tmp_path, base, machine_slower, correct_drift=False).regressions) == 16
    result = _gate(tmp_path, base, machine_slower)
    assert not result.regressions
    assert all(d.factor == pytest.approx(1.2, rel=0.02) and d.source == "other backends"
               for d in result.drifts.values())
    # one backend slower: its own rows never divide it out, beside one other backend too
    result = _gate(tmp_path, _sweep_rows({}, seed=0), _sweep_rows({"torch": 1.5}, seed=200))
    assert {f.backend for f in result.regressions} == {"torch"} and len(result.regressions) == 4


def test_with_four_backends_one_changed_backend_moves_no_other(tmp_path):
    base = _sweep_rows({}, seed=0, backends=FOUR)
    result = _gate(tmp_path, base, _sweep_rows({"torch": 1.5}, seed=300, backends=FOUR))
    assert {f.backend for f in result.regressions} == {"torch"} and len(result.regressions) == 4
    assert not result.improvements and result.drifts["swin"].factor == pytest.approx(1.0, abs=0.02)


def test_a_backend_gated_alone_is_held_to_the_calibration(tmp_path):
    # no other backend to say how the machine moved: the calibration is the control, so a uniform
    # slowdown of the one backend under test is caught
    result = _gate(tmp_path, _sweep_rows({}, seed=0, backends=("torch",)),
                   _sweep_rows({"torch": 1.5}, seed=400, backends=("torch",)))
    assert result.drifts["torch"].source == "calibration" and len(result.regressions) == 4


def test_every_backend_slower_with_the_calibration_unchanged_is_a_regression(tmp_path):
    # a baseline whose every latency is halved: the other backends say 2x, the calibration 1x,
    # and the drift stops at the calibration's bound
    base = _sweep_rows({b: 0.5 for b in FOUR}, seed=0, backends=FOUR)
    result = _gate(tmp_path, base, _sweep_rows({}, seed=500, backends=FOUR))
    assert len(result.regressions) == 16
    assert all(d.unbounded == pytest.approx(2.0, rel=0.02) for d in result.drifts.values())


def test_normalize_needs_calibrations(tmp_path):
    base = store.load(synthetic.write(tmp_path / "base.jsonl", [synthetic.row("torch", 7, 1e-3)]))
    current = tmp_path / "cur.jsonl"
    lines = synthetic.write(current, [synthetic.row("torch", 7, 1e-3)]).read_text().splitlines()
    current.write_text("\n".join(line for line in lines if '"calibration"' not in line) + "\n")
    with pytest.raises(ResultsError, match="no calibration record"):
        gate(base, store.load(current), Thresholds(), normalize=True)


def test_thresholds_parse_and_refuse_bad_values():
    assert Thresholds.parse(["latency=0.25", "memory=0"]) == Thresholds(0.25, 0.0, 0.0)
    for bad in (["speed=1"], ["latency=ten"], ["latency=-1"]):
        with pytest.raises(ResultsError):
            Thresholds.parse(bad)


def test_merge_repeats_pools_samples_and_keeps_each_repeats_median(tmp_path):
    runs = [store.load(synthetic.write(tmp_path / f"r{i}.jsonl", [synthetic.row("torch", 7, m, seed=i)]))
            for i, m in enumerate((1e-3, 1.1e-3, 1.05e-3))]
    header, calibrations, [row] = merge_repeats(runs)
    assert row["samples"] == 3 * 64 and len(row["repeat_medians_ms"]) == 3
    assert len(row["round_medians_ms"]) == row["rounds"] == 3 * 8  # every repeat's rounds are draws
    assert max(row["repeat_medians_ms"]) / min(row["repeat_medians_ms"]) == pytest.approx(1.1, rel=0.02)
    assert header["baseline"]["repeats"] == 3 and calibrations


def test_a_baselines_noise_floor_is_its_repeats_spread_with_each_repeats_drift_divided_out(tmp_path):
    # the second repeat ran on a machine 1.2x slower for every backend, torch 1.1x more: only
    # torch's own 10% is the spread of its rows
    runs = [store.load(synthetic.write(tmp_path / f"r{i}.jsonl",
                                       _sweep_rows(factors, seed=100 * i, backends=FOUR)))
            for i, factors in enumerate(({}, {"torch": 1.2 * 1.1, "swin": 1.2, "sdpa": 1.2, "natten": 1.2}))]
    _, _, rows = merge_repeats(runs)
    spreads = {r["backend"]: repeat_spread(r) for r in rows if r["kernel_size"][0] == 5}
    assert spreads["torch"] == pytest.approx(0.1, abs=0.03)
    assert all(spreads[b] < 0.03 for b in ("swin", "sdpa", "natten"))
    assert all(max(r["repeat_medians_ms"]) / min(r["repeat_medians_ms"]) > 1.15 for r in rows)


def test_a_slowdown_in_one_round_only_is_noise(tmp_path):
    current = synthetic.row("torch", 7, 1.3e-3, seed=2)
    current["round_medians_ms"] = [1.6, 1.0, 1.02]  # one slow episode; the pooled median moved
    result = _gate(tmp_path, [synthetic.row("torch", 7, 1e-3, seed=1)], [current])
    [finding] = [f for f in result.findings if f.metric == "latency"]
    assert finding.outcome == "unchanged" and re.search(r"rounds \+6\d%", finding.message)
    current["round_medians_ms"] = [1.3, 1.28, 1.33]
    assert _gate(tmp_path, [synthetic.row("torch", 7, 1e-3, seed=1)], [current]).regressions


def test_confirm_keeps_a_regression_only_if_the_gate_of_every_rerun_finds_it_too(tmp_path):
    base_rows = [synthetic.row("torch", 7, 1e-3, seed=1), synthetic.row("swin", 7, 1e-3, seed=2)]
    result = _gate(tmp_path, base_rows, [synthetic.row("torch", 7, 1.5e-3, seed=3),
                                         synthetic.row("swin", 7, 1.5e-3, seed=4)])
    assert len(result.regressions) == 2
    # a rerun: torch back to its baseline time, swin still slow; another lacking swin, torch slow
    again = _gate(tmp_path, base_rows, [synthetic.row("torch", 7, 1e-3, seed=5),
                                        synthetic.row("swin", 7, 1.5e-3, seed=6)])
    lacking = _gate(tmp_path, base_rows, [synthetic.row("torch", 7, 1.5e-3, seed=7)])
    confirm(result, [again, lacking])
    assert _outcomes(result) == [("torch", "unconfirmed"), ("swin", "regression")]
    assert [f.backend for f in result.regressions] == ["swin"]
    assert result.to_record()["unconfirmed"] == 1
    torch = next(f for f in result.findings if f.backend == "torch" and f.metric == "latency")
    assert "measured again: " in torch.message and torch.message.count("%") >= 3
