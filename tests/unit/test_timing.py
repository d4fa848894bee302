"""The adaptive loop, driven by a fake clock and fake samplers: no hardware involved."""

import random

import pytest

from natbench.errors import SuiteError
from natbench.timing import TimingPolicy, cpu_sampler, sample_adaptively


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_sampler(clock, durations):
    """Each sample advances the clock by its duration."""
    source = iter(durations)

    def batch(n):
        out = []
        for _ in range(n):
            d = next(source)
            clock.now += d
            out.append(d)
        return out

    return batch


def test_steady_samples_converge_after_min_samples_and_min_time():
    clock = FakeClock()
    policy = TimingPolicy(warmup_s=0.05, min_samples=5, min_time_s=0.1, max_time_s=10)
    timing = sample_adaptively(fake_sampler(clock, [0.01] * 10_000), policy, clock)
    assert timing.stop == "converged"
    assert timing.warmup_calls == 5  # 0.05 s of 0.01 s calls
    assert len(timing.samples) >= 10  # min_time 0.1 s of 0.01 s samples
    assert len(timing.samples) < 40


def test_noisy_samples_stop_at_the_hard_maximum():
    clock, rng = FakeClock(), random.Random(0)
    durations = [rng.choice([0.001, 0.01]) for _ in range(100_000)]
    policy = TimingPolicy(warmup_s=0, min_samples=5, min_time_s=0.01, max_time_s=0.5,
                          noise_target=0.001)
    timing = sample_adaptively(fake_sampler(clock, durations), policy, clock)
    assert timing.stop == "max-time"
    # up to the budget: no call is started that is expected not to fit (calls vary: one may)
    assert 0.5 - 0.02 <= sum(timing.samples) <= 0.5 + 0.01


def test_a_call_that_would_overrun_the_budget_is_not_started():
    clock = FakeClock()
    policy = TimingPolicy(warmup_s=0, min_samples=5, min_time_s=0.01, max_time_s=0.05)
    timing = sample_adaptively(fake_sampler(clock, [0.03] * 10), policy, clock)
    assert timing.stop == "max-time" and timing.samples == [0.03]  # a second would end at 0.06


def test_never_exceeds_max_samples():
    clock = FakeClock()
    policy = TimingPolicy(warmup_s=0, min_samples=5, min_time_s=100, max_time_s=100, max_samples=37)
    timing = sample_adaptively(fake_sampler(clock, [0.001] * 1000), policy, clock)
    assert timing.stop == "max-samples" and len(timing.samples) == 37


def test_taken_samples_come_first_count_towards_the_budget_and_replace_the_warmup():
    clock = FakeClock()
    policy = TimingPolicy(warmup_s=0.05, min_samples=5, min_time_s=0.01, max_time_s=0.05)

    def must_not_sample(n):
        raise AssertionError("a second 0.03 s call does not fit in what is left of 0.05 s")

    timing = sample_adaptively(must_not_sample, policy, clock, taken=[0.03])
    assert (timing.samples, timing.warmup_calls, timing.stop) == ([0.03], 0, "max-time")
    # with room left, sampling goes on after the taken sample, without a warm-up
    timing = sample_adaptively(fake_sampler(clock, [0.01] * 100), policy, clock, taken=[0.02])
    assert timing.samples[0] == 0.02 and timing.warmup_calls == 0
    assert len(timing.samples) > 1 and sum(timing.samples) <= 0.05 + 1e-9


def test_per_round_policy_splits_the_time_budgets():
    policy = TimingPolicy(min_time_s=0.3, max_time_s=3.0, rounds=3).per_round()
    assert (policy.min_time_s, policy.max_time_s, policy.rounds) == (pytest.approx(0.1), 1.0, 1)
    assert TimingPolicy(max_time_s=3.0, rounds=3).per_round(2).max_time_s == 1.5
    # an untimed call as long as the warm-up, just run, is the warm-up; a shorter one is not
    assert TimingPolicy(warmup_s=0.025).per_round(warm_call_s=0.03).warmup_s == 0
    assert TimingPolicy(warmup_s=0.025).per_round(warm_call_s=0.001).warmup_s == 0.025


def test_no_warmup_calls_when_the_warmup_is_zero():
    clock = FakeClock()
    policy = TimingPolicy(warmup_s=0, min_samples=5, min_time_s=0.1, max_time_s=1)
    timing = sample_adaptively(fake_sampler(clock, [0.02] * 100), policy, clock)
    assert timing.warmup_calls == 0 and len(timing.samples) >= 5


def test_cpu_sampler_times_only_the_timed_call():
    ticks = iter(range(0, 10_000, 7))  # the fake ns clock advances 7 ns per reading
    calls = []
    batch = cpu_sampler(lambda: calls.append("timed"), setup=lambda: calls.append("setup"),
                        clock_ns=lambda: next(ticks))
    assert batch(3) == pytest.approx([7e-9] * 3)
    assert calls == ["setup", "timed"] * 3


@pytest.mark.parametrize("threads", [0, -1, 1.5, "two", True, "all"])
def test_a_thread_count_that_is_not_a_positive_int_or_auto_is_refused(threads):
    with pytest.raises(SuiteError, match="use a positive count"):
        TimingPolicy(threads=threads)


def test_threads_default_to_one_and_take_auto_or_a_count():
    assert TimingPolicy().threads == 1
    assert TimingPolicy(threads="auto").threads == "auto" and TimingPolicy(threads=3).threads == 3


def test_a_backend_may_change_its_own_timing_fields_only():
    policy = TimingPolicy(max_time_s=1.0, backends={"slow": {"max_time_s": 3.0, "rounds": 1}})
    assert policy.for_backend("slow") == TimingPolicy(max_time_s=3.0, rounds=1)
    assert policy.for_backend("fast") == TimingPolicy(max_time_s=1.0)
    # a backend's policy splits into rounds whatever the other backends' rounds are
    assert TimingPolicy(rounds=3, backends={"slow": {"rounds": 2}}).for_backend("fast").per_round().rounds == 1
    with pytest.raises(SuiteError, match="backends.slow.threads"):
        TimingPolicy(backends={"slow": {"threads": 2}})
    with pytest.raises(SuiteError, match="use a table of timing fields"):
        TimingPolicy(backends={"slow": 3.0})


def _faulting_sampler(faults, per_call, durations):
    """Each call takes its duration and faults in its count of fresh pages."""
    calls = iter(zip(durations, per_call))

    def batch(n):
        duration, pages = next(calls)
        faults[0] += pages
        return [duration]

    return batch


@pytest.mark.parametrize("per_call, expected", [
    ((255, 0), (2.0, [])),          # under 1 MiB of fresh pages: the call is the sample
    ((256, 0), (3.0, [2.0])),       # the heap grew: set aside, the next call is the sample
    ((300, 300, 0), (1.5, [2.0, 3.0])),  # the retake grew it again: set aside as well
    ((300, 300, 300, 300), (0.5, [2.0, 3.0, 1.5])),  # _RETAKES set aside, the next kept as is
])
def test_calls_that_grew_the_heap_are_set_aside(monkeypatch, per_call, expected):
    from natbench import runner

    assert runner._RETAKES == 3
    faults = [0]
    monkeypatch.setattr(runner, "_minor_faults", lambda: faults[0])
    sampler = _faulting_sampler(faults, per_call, [2.0, 3.0, 1.5, 0.5])
    assert runner._steady_call(sampler) == expected


def test_fresh_pages_touched_in_a_call_show_as_minor_faults():
    from natbench import runner
    from tests.fakes import touch_fresh_pages

    pages = 2 * runner._FRESH_PAGES
    before = runner._minor_faults()
    touch_fresh_pages(pages)
    assert runner._minor_faults() - before >= pages
