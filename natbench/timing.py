"""Timers and the adaptive sampling loop.

The loop works in the manner of NVIDIA's nvbench: warm up for a while, then take samples until
there are at least `min_samples` over at least `min_time_s` and the median's 95% CI is narrower
than `noise_target` (relative half-width), or until the hard `max_time_s` is spent. Samplers
return batches: a CUDA batch is synchronized once, not once per call.

The loop takes its clock and sampler as arguments, so tests drive it with fake ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from natbench.stats import summarize

SampleBatch = Callable[[int], list[float]]  # n -> n durations in seconds


@dataclass(frozen=True)
class TimingPolicy:
    warmup_s: float = 0.05
    min_samples: int = 5
    min_time_s: float = 0.1
    max_time_s: float = 1.0
    max_samples: int = 2000
    noise_target: float = 0.02
    # Each case is measured in this many rounds spread over the whole run (see session.py);
    # the time budgets above are split across them.
    rounds: int = 3

    def per_round(self) -> TimingPolicy:
        from dataclasses import replace

        return replace(self, min_time_s=self.min_time_s / self.rounds,
                       max_time_s=self.max_time_s / self.rounds, rounds=1)


@dataclass(frozen=True)
class Timing:
    samples: list[float]
    warmup_calls: int
    stop: str  # "converged", "max-time" or "max-samples"


def sample_adaptively(sample_batch: SampleBatch, policy: TimingPolicy,
                      clock: Callable[[], float] = time.perf_counter) -> Timing:
    start = clock()
    warmup_calls = 0
    while warmup_calls == 0 or clock() - start < policy.warmup_s:
        sample_batch(1)
        warmup_calls += 1
    samples: list[float] = []
    start = clock()
    batch = 1
    while True:
        samples += sample_batch(min(batch, policy.max_samples - len(samples)))
        elapsed = clock() - start
        if len(samples) >= policy.max_samples:
            return Timing(samples, warmup_calls, "max-samples")
        if elapsed >= policy.max_time_s:
            return Timing(samples, warmup_calls, "max-time")
        if (len(samples) >= policy.min_samples and elapsed >= policy.min_time_s
                and summarize(samples).relative_ci <= policy.noise_target):
            return Timing(samples, warmup_calls, "converged")
        # Grow batches while calls are short, but never past the time that is left.
        per_call = elapsed / len(samples)
        left = policy.max_time_s - elapsed
        batch = max(1, min(2 * batch, int(left / per_call) if per_call > 0 else 2 * batch, 64))


def cpu_sampler(timed: Callable[[], object], setup: Callable[[], object] | None = None,
                clock_ns: Callable[[], int] = time.perf_counter_ns) -> SampleBatch:
    """Each sample: `setup()` untimed, then `timed()` between two perf_counter_ns readings."""

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
