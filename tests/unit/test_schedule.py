"""Rounds: how many a pair gets, and which rounds of the run a pair of fewer rounds is measured in."""

from collections import Counter

import pytest

from natbench.errors import SuiteError
from natbench.schedule import round_span, rounds_for, scheduled_rounds
from natbench.timing import TimingPolicy


@pytest.mark.parametrize("own", range(1, 9))
def test_every_pair_of_a_backend_fits_in_the_run_with_its_rounds_as_far_apart_as_the_others(own):
    total, pairs = 8, 15
    span = round_span(own, total)
    starts = total - span
    schedules = [sorted(scheduled_rounds(own, first, first + span))
                 for first in (i * starts // pairs for i in range(pairs))]
    assert all(len(s) == own and s[-1] < total for s in schedules)
    assert len({tuple(b - a for a, b in zip(s, s[1:])) for s in schedules}) == 1  # same spacing
    if 1 < own < total:  # the pairs start in more than one round, spacing at least half the run's
        assert starts >= 2 and min(b - a for a, b in zip(schedules[0], schedules[0][1:])) >= \
            (total - 1) // (own - 1) // 2


def test_natten_lib_in_kernel_sizes_takes_its_three_calls_two_or_three_rounds_apart():
    span = round_span(3, 8)
    schedules = [sorted(scheduled_rounds(3, i * (8 - span) // 15, i * (8 - span) // 15 + span))
                 for i in range(15)]
    assert {tuple(s) for s in schedules} == {(0, 2, 5), (1, 3, 6), (2, 4, 7)}
    load = Counter(r for s in schedules for r in s)
    assert max(load.values()) <= 2 * min(load.values())  # not 15 calls in one round and 2 in another


def test_a_slow_call_gets_only_the_rounds_its_budget_holds():
    policy = TimingPolicy(max_time_s=1.0, rounds=7)
    assert rounds_for(policy, 0.01) == 7
    assert rounds_for(policy, 0.3) == 3  # three one-sample rounds fit in 1 s, four would not
    assert rounds_for(policy, 5.0) == 1


def test_min_rounds_holds_a_slow_pair_to_that_many_one_call_rounds_within_the_runs():
    policy = TimingPolicy(max_time_s=1.0, rounds=8, min_rounds=6)
    assert rounds_for(policy, 0.3) == 6  # 1.8 s: the budget grows to six one-call rounds
    assert rounds_for(policy, 0.1) == 8  # ten calls fit: every round, as without it
    assert rounds_for(TimingPolicy(rounds=3, min_rounds=8), 0.5) == 3  # never past the run's
    with pytest.raises(SuiteError, match="min_rounds 0: use a positive count"):
        TimingPolicy(min_rounds=0)
