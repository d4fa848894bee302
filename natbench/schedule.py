"""Rounds: how many a pair gets, which rounds of the run it is measured in, and the order in
which a round visits the pairs. Pure functions of the policy and of what is on disk; the session
asks them and measures.

Every pair is measured in the run's rounds, spread over the whole run (round 2 of the first case
comes after round 1 of the last), so that a row's rounds are independent draws of the machine's
state. A pair whose one call per round would overrun its time budget gets fewer rounds
(`rounds_for`), spread evenly over its backend's span of the run (`round_span`,
`scheduled_rounds`), and such pairs start in different rounds (`first_rounds`).
"""

from __future__ import annotations

import random

from natbench.suite import Point
from natbench.timing import TimingPolicy


def rounds_for(policy: TimingPolicy, call_s: float) -> int:
    """The rounds a pair whose one call takes `call_s` gets: every round, unless one sample per
    round would overrun max_time_s (the hard budget); then as many as fit, at least min_rounds
    (and 1)."""
    if call_s <= 0:
        return policy.rounds
    return max(1, min(policy.rounds, max(policy.min_rounds, int(policy.max_time_s // call_s))))


def first_rounds(pairs: list[tuple[Point, str]], policy: TimingPolicy) -> dict[tuple[str, str], int]:
    """The round in which a pair is first measured, for the pairs not measured first in round 0:
    those of a backend whose policy gives it fewer rounds than the run (natten-lib in
    kernel-sizes, ~1 s a call), spread evenly over the rounds its span (round_span) leaves to
    start in. All started in round 0, such slow pairs would fill the first half of the run and
    squeeze every other pair's later rounds into the second. From the suite's pairs, not what is
    left of them: a resumed run keeps them."""
    own = {backend: policy.for_backend(backend).rounds for _, backend in pairs}
    spread: dict[str, list[str]] = {}
    for point, backend in pairs:
        if own[backend] < policy.rounds:
            spread.setdefault(backend, []).append(point.case.key)
    starts = {backend: policy.rounds - round_span(own[backend], policy.rounds) for backend in spread}
    return {(key, backend): i * starts[backend] // len(keys)
            for backend, keys in spread.items() for i, key in enumerate(keys)}

def round_span(own: int, total: int) -> int:
    """How many rounds apart a pair's first and last rounds lie, for a backend of `own` of the
    run's `total` rounds: all of the run for a backend of every round; for fewer, the run less
    about one spacing of its rounds, so that its pairs start in that many rounds (loading the
    run's rounds evenly) and each pair's rounds lie equally far apart. Spread over every round
    that leaves room to end in the last instead, late starters would take their calls one round
    apart (rounds 5, 6, 7 of 8) and every pair would end in the last round."""
    if own >= total:
        return total - 1
    return (total - 1) - (total - 1) // own

def round_order(todo: list[tuple[Point, str]], round_: int) -> list[tuple[Point, str]]:
    """The pairs in the order one round measures them: the suite's order in round 0, then the
    cases shuffled (seeded by the round, so a resumed run repeats it), each case's backends kept
    together. A host disturbance that recurs at about the period of a round would otherwise hit
    the same cases in every round (Google Benchmark's random interleaving avoids the same
    aliasing); keeping a case's backends adjacent keeps them measured in the same machine state,
    which `compare` relies on."""
    if round_ == 0:
        return todo
    cases: dict[str, list[tuple[Point, str]]] = {}
    for pair in todo:
        cases.setdefault(pair[0].case.key, []).append(pair)
    groups = list(cases.values())
    random.Random(round_).shuffle(groups)
    return [pair for group in groups for pair in group]

def planned(rounds: list[dict], total: int) -> int:
    """The rounds a pair gets, from its first round's record (files from before the field: all)."""
    return min(rounds[0].get("rounds_planned", total), total)

def scheduled_rounds(planned: int, first: int, last: int) -> set[int]:
    """Which rounds a pair with `planned` rounds runs in: evenly from `first` to `last`."""
    if planned <= 1:
        return {first}
    return {first + round(i * (last - first) / (planned - 1)) for i in range(planned)}

def due(rounds: list[dict], round_: int, first_round: int, own_rounds: int, total: int) -> bool:
    """Whether a pair with `rounds` on disk (its round records) is measured in `round_` of a run of
    `total`: first in `first_round`, then in the rounds its plan spreads over its backend's span
    (`own_rounds` of the run's). Never twice in one round."""
    if any(r["round"] == round_ for r in rounds):
        return False
    if not rounds:
        return round_ == first_round
    first = rounds[0]["round"]
    # within the run even for a file begun under another schedule (resumed)
    last = min(first + round_span(own_rounds, total), total - 1)
    return round_ in scheduled_rounds(planned(rounds, total), first, last)
