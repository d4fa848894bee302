"""Which rounds a pair of a backend with fewer rounds than the run is measured in."""

from collections import Counter

import pytest

from natbench.session import round_span, scheduled_rounds


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
