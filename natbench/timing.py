"""Timers and the adaptive sampling loop.

The loop works in the manner of NVIDIA's nvbench: warm up for a while, then take samples until
there are at least `min_samples` over at least `min_time_s` and the median's 95% CI is narrower
than `noise_target` (relative half-width), or until the hard `max_time_s` is spent. Samplers
return batches: a CUDA batch is synchronized once, not once per call.

The loop takes its clock and sampler as arguments, so tests drive it with fake ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

from natbench.errors import SuiteError
from natbench.stats import summarize

SampleBatch = Callable[[int], list[float]]  # n -> n durations in seconds


class Clock:
    """The clock natbench times intervals with. Everything that measures reads `CLOCK` when it
    runs, so tests swap in a simulated clock and run the timing logic without real time."""

    def now(self) -> float:
        return time.perf_counter()

    def now_ns(self) -> int:
        return time.perf_counter_ns()


CLOCK = Clock()


@dataclass(frozen=True)
class TimingPolicy:
    warmup_s: float = 0.025  # per round
    min_samples: int = 5
    min_time_s: float = 0.1
    max_time_s: float = 1.0
    max_samples: int = 2000
    noise_target: float = 0.02
    # Each pair is measured in this many rounds spread over the whole run (see session.py), the
    # time budgets above split across them. The rounds are a row's independent draws of the
    # machine's state: its CI comes from their medians (stats.median_interval; with 8, their
    # full range, 99.2% coverage), and so does every verdict (verdict.py).
    rounds: int = 8
    # The fewest rounds a pair gets when one call in each of the run's rounds would overrun
    # max_time_s: its budget grows to that many one-call rounds (a call slower than max_time_s
    # is still a timeout). 1 by default: such a pair gets the rounds that fit. A t test on 3
    # rounds has 2 degrees of freedom and little power, so a suite whose slow pairs are cheap
    # enough raises it.
    min_rounds: int = 1
    # torch's intra-op CPU threads while timing: a count, or "auto" for torch's own default (one
    # per physical core, or OMP_NUM_THREADS). 1 by default, as torch.utils.benchmark.Timer does:
    # on a 2-vCPU VM a parallel region waits for its slowest thread, so any other work on the
    # machine stalls every call; with one thread the round medians wander by 1-3% instead of
    # 10-20% (docs/methodology.md).
    threads: int | str = 1
    # The longest a measuring worker may take beyond a pair's sampling budget before it is killed
    # and the round recorded as a `timeout`: one call, or a round's set-up (bind, check, memory
    # pass). No healthy case here comes near it: the slowest calls of the shipped suites on a
    # 2-core CPU take 20 s.
    call_timeout_s: float = 120.0
    # Per backend, other values of the fields above except threads (one count serves a whole
    # run), e.g. {"natten-lib": {"max_time_s": 2.5, "rounds": 1}}: a suite gives a backend that is
    # 1000x slower than the rest the budget a CI needs, without giving it to every pair.
    backends: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.threads != "auto" and (type(self.threads) is not int or self.threads < 1):
            raise SuiteError(f"threads {self.threads!r}: use a positive count, or \"auto\" for "
                             f"torch's default (one per physical core).")
        if not isinstance(self.call_timeout_s, (int, float)) or not self.call_timeout_s > 0:
            raise SuiteError(f"call_timeout_s {self.call_timeout_s!r}: use a positive number of seconds.")
        if type(self.min_rounds) is not int or self.min_rounds < 1:
            raise SuiteError(f"min_rounds {self.min_rounds!r}: use a positive count of rounds "
                             f"(1, the default, gives a slow pair the rounds that fit).")
        allowed = [f.name for f in fields(self) if f.name not in ("threads", "backends")]
        for name, values in self.backends.items():
            if not isinstance(values, dict):
                raise SuiteError(f"backends.{name}: use a table of timing fields, e.g. "
                                 f"[timing.backends.{name}] with max_time_s = 2.5.")
            for key in values:
                if key not in allowed:
                    raise SuiteError(f"backends.{name}.{key}: not a timing field a backend can set; "
                                     f"use {', '.join(allowed)}.")
            if values.get("rounds", 1) > self.rounds:
                raise SuiteError(f"backends.{name}.rounds {values['rounds']} is over the run's "
                                 f"{self.rounds} rounds; a backend may take fewer, not more.")

    def for_backend(self, name: str) -> TimingPolicy:
        """The policy of one backend: this one with its values from `backends`, and no
        `backends` of its own (a backend's rounds checked against a later round's 1 would fail)."""
        return replace(self, **self.backends.get(name, {}), backends={})

    def per_round(self, rounds: int | None = None, warm_call_s: float = 0.0) -> TimingPolicy:
        """The policy of one of `rounds` rounds (default: all of them). `warm_call_s`: an untimed
        call that just ran; one at least as long as the warm-up is the warm-up (a slow call
        would otherwise be run once more for nothing)."""
        rounds = rounds or self.rounds
        return replace(self, min_time_s=self.min_time_s / rounds,
                       max_time_s=self.max_time_s / rounds, rounds=1,
                       warmup_s=0.0 if warm_call_s >= self.warmup_s else self.warmup_s)


@dataclass(frozen=True)
class Timing:
    samples: list[float]
    warmup_calls: int
    stop: str  # "converged", "max-time" or "max-samples"


def sample_adaptively(sample_batch: SampleBatch, policy: TimingPolicy,
                      clock: Callable[[], float] | None = None,
                      taken: Sequence[float] = ()) -> Timing:
    """Warm up, then sample until converged or out of budget. `taken`: samples of this round
    already measured warm (the runner's probe call); they are the first samples, count towards
    the time budget, and stand in for the warm-up. `clock`: CLOCK.now unless given."""
    clock = clock or CLOCK.now
    start = clock()
    warmup_calls = 0
    while not taken and policy.warmup_s > 0 and (warmup_calls == 0 or clock() - start < policy.warmup_s):
        sample_batch(1)
        warmup_calls += 1
    start = clock() - sum(taken)
    samples = list(taken) or sample_batch(1)
    batch = 1
    while True:
        elapsed = clock() - start
        if len(samples) >= policy.max_samples:
            return Timing(samples, warmup_calls, "max-samples")
        if elapsed >= policy.max_time_s:
            return Timing(samples, warmup_calls, "max-time")
        if (len(samples) >= policy.min_samples and elapsed >= policy.min_time_s
                and summarize(samples).relative_ci <= policy.noise_target):
            return Timing(samples, warmup_calls, "converged")
        # Grow batches while calls are short, but never past the time that is left: a call that
        # is expected not to fit in it is not started (max_time_s is a hard budget).
        per_call = elapsed / len(samples)
        left = policy.max_time_s - elapsed
        if per_call > left:
            return Timing(samples, warmup_calls, "max-time")
        batch = max(1, min(2 * batch, int(left / per_call) if per_call > 0 else 2 * batch, 64))
        samples += sample_batch(min(batch, policy.max_samples - len(samples)))


def sampler_for(device: str, timed: Callable[[], object],
                setup: Callable[[], object] | None = None) -> SampleBatch:
    """The sampler of `device`: CUDA events on "cuda", perf_counter_ns otherwise."""
    return (cuda_sampler if device == "cuda" else cpu_sampler)(timed, setup)


def cpu_sampler(timed: Callable[[], object], setup: Callable[[], object] | None = None,
                clock_ns: Callable[[], int] | None = None) -> SampleBatch:
    """Each sample: `setup()` untimed, then `timed()` between two readings of `clock_ns`
    (CLOCK.now_ns, perf_counter_ns, unless given)."""
    clock_ns = clock_ns or CLOCK.now_ns

    def batch(n: int) -> list[float]:
        out = []
        for _ in range(n):
            if setup is not None:
                setup()
            begin = clock_ns()
            timed()
            out.append((clock_ns() - begin) * 1e-9)
        return out

    return batch


def cuda_sampler(timed: Callable[[], object], setup: Callable[[], object] | None = None,
                 device=None) -> SampleBatch:
    """CUDA events around each call, the L2 cache flushed before each, one synchronize a batch."""
    import torch

    l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20)
    flush = torch.empty(2 * l2_bytes, dtype=torch.int8, device=device)

    def batch(n: int) -> list[float]:
        events = []
        for _ in range(n):
            if setup is not None:
                setup()
            flush.zero_()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            timed()
            end.record()
            events.append((begin, end))
        torch.cuda.synchronize(device)
        return [begin.elapsed_time(end) * 1e-3 for begin, end in events]

    return batch
