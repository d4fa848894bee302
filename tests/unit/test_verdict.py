"""The one decision rule on seeded synthetic rounds, the drift estimate and the chance count."""

import math
import random

import pytest

from natbench.verdict import (FASTER, SAME, SLOWER, UNKNOWN, calibration_ratio, chance_calls,
                              decide, decide_draws, drift_factors)

# The spread of a round's machine factor (log sd) on a 2-vCPU VM at one thread is 1-3%; 5% here,
# and each row's own round-to-round noise on top.
MACHINE, ROW = 0.05, 0.02
TRIALS = 2000


def _machine(rng, rounds=8):
    return [math.exp(rng.gauss(0, MACHINE)) for _ in range(rounds)]


def _draws(rng, machine, median=1e-3):
    return [median * f * math.exp(rng.gauss(0, ROW)) for f in machine]


def _called(decisions):
    return sum(d.verdict in (FASTER, SLOWER) for d in decisions) / len(decisions)


def test_no_true_difference_is_called_at_most_alpha_of_the_time():
    rng = random.Random(1)
    side_by_side, two_runs = [], []
    for _ in range(TRIALS):
        machine = _machine(rng)  # one run: both rows see the same state in each round
        side_by_side.append(decide_draws(_draws(rng, machine), _draws(rng, machine), paired=True))
        two_runs.append(decide_draws(_draws(rng, _machine(rng)), _draws(rng, _machine(rng))))
    bound = 0.05 + 2 * math.sqrt(0.05 * 0.95 / TRIALS)  # alpha and two standard errors of a count
    assert _called(side_by_side) <= bound and _called(two_runs) <= bound


@pytest.mark.parametrize("paired", [True, False])
def test_a_true_1_3x_difference_with_8_rounds_a_side_is_called_in_95_percent(paired):
    rng = random.Random(2)
    decisions = []
    for _ in range(TRIALS):
        a_machine = _machine(rng)
        b_machine = a_machine if paired else _machine(rng)
        decisions.append(decide_draws(_draws(rng, a_machine), _draws(rng, b_machine, 1.3e-3), paired))
    assert sum(d.verdict == SLOWER for d in decisions) / TRIALS >= 0.95


def test_pairing_cancels_the_machine_state_that_the_rounds_share():
    # a machine that wanders by 20% a round hides a 5% difference from the unpaired test, not from
    # the paired one: the rounds of one run were measured side by side
    rng = random.Random(3)
    machine = [math.exp(rng.gauss(0, 0.2)) for _ in range(8)]
    a = [1e-3 * f * math.exp(rng.gauss(0, 0.005)) for f in machine]
    b = [1.05e-3 * f * math.exp(rng.gauss(0, 0.005)) for f in machine]
    assert decide_draws(a, b, paired=True).verdict == SLOWER
    assert decide_draws(a, b).verdict == SAME


def test_the_ratio_and_its_interval_agree_with_the_verdict():
    rng = random.Random(4)
    for factor, verdict in ((1.0, SAME), (1.2, SLOWER), (0.8, FASTER)):
        d = decide_draws(_draws(rng, _machine(rng)), _draws(rng, _machine(rng), 1e-3 * factor))
        assert d.verdict == verdict and d.ratio_low < d.ratio < d.ratio_high
        assert (d.ratio_low > 1 or d.ratio_high < 1) == (d.p_value < 0.05)
        assert d.ratio == pytest.approx(factor, rel=0.06)


def test_one_round_on_a_side_is_unknown_never_a_verdict():
    d = decide_draws([1e-3], [2e-3, 2.1e-3, 1.9e-3])
    assert d.verdict == UNKNOWN and "1 round" in d.reason and d.ratio is None
    assert decide_draws([1e-3], [2e-3], paired=True).verdict == UNKNOWN
    constant = decide_draws([1e-3] * 3, [1e-3] * 3)
    assert constant.verdict == SAME and constant.p_value == 1.0


def test_rows_of_one_run_pair_by_round_and_of_two_runs_do_not():
    def row(medians, indices):
        return {"round_medians_ms": medians, "round_indices": indices}

    a, b = row([1.0, 2.0, 1.0, 2.0], [0, 1, 2, 3]), row([1.1, 2.2, 1.1, 2.2], [0, 1, 2, 3])
    assert decide(a, b, same_run=True).test == "paired-t" and decide(a, b, same_run=True).verdict == SLOWER
    assert decide(a, b).test == "welch-t" and decide(a, b).verdict == SAME
    # a backend of fewer rounds pairs on the rounds both were measured in
    few = row([1.1, 2.2, 2.2], [0, 1, 3])
    paired = decide(a, few, same_run=True)
    assert paired.test == "paired-t" and paired.rounds == (3, 3)
    # b_factor divides B's latencies: the drift between two runs
    assert decide(a, row([2.0, 4.0, 2.0, 4.0], None), b_factor=2.0).ratio == pytest.approx(1.0)


def test_a_backends_drift_comes_from_the_others_bounded_by_the_calibration():
    ratios = {"natten": [1.5] * 4, "torch": [1.1] * 4, "swin": [1.1] * 4, "sdpa": [1.1] * 4}
    drifts = drift_factors(ratios, calibration=1.0)
    assert drifts["natten"].factor == pytest.approx(1.1) and drifts["natten"].source == "other backends"
    assert drifts["torch"].factor == pytest.approx(1.1)  # natten's change is one vote of three
    # every backend 2x with the calibration unchanged: the drift stops at the bound
    halved = drift_factors({b: [2.0] * 4 for b in ratios}, calibration=1.0)
    assert all(d.factor == pytest.approx(1.25) and d.unbounded == pytest.approx(2.0) for d in halved.values())
    # alone, or beside a single other backend, a backend is held to the calibration
    alone = drift_factors({"natten": [1.5] * 4}, calibration=1.02)
    assert alone["natten"].factor == 1.02 and alone["natten"].source == "calibration"
    two = drift_factors({"natten": [1.3] * 4, "swin": [1.0] * 4}, calibration=1.0)
    assert {d.source for d in two.values()} == {"calibration"}
    assert drift_factors({"natten": [1.5]}, calibration=None)["natten"].source == "none"


def test_calibration_ratio_prefers_the_probes_of_every_round():
    def probes(rate, n=8):
        return [{"record": "probe", "device": "cpu", "dtype": "float32", "round": i,
                 "matmul_flops_per_s": rate * (1.2 if i == 0 else 1.0)} for i in range(n)]

    calibration = [{"device": "cpu", "dtype": "float32", "matmul_flops_per_s": 1e11}]
    assert calibration_ratio(calibration, [{**calibration[0], "matmul_flops_per_s": 5e10}]) == 2.0
    assert calibration_ratio(calibration, calibration, probes(1e11), probes(8e10)) == pytest.approx(1.25)
    assert calibration_ratio(calibration, [{**calibration[0], "dtype": "float16"}]) is None


def test_chance_calls_count_verdicts_against_alpha():
    class D:
        def __init__(self, verdict):
            self.verdict = verdict

    quiet = chance_calls([D(SAME)] * 95 + [D(SLOWER)] * 3 + [D(UNKNOWN)] * 7)
    assert (quiet.judged, quiet.called, quiet.expected) == (98, 3, pytest.approx(4.9))
    assert not quiet.too_many
    noisy = chance_calls([D(SAME)] * 80 + [D(FASTER)] * 10 + [D(SLOWER)] * 10)
    assert noisy.too_many and noisy.p_excess < 0.01
