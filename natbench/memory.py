"""Measured peak memory of one call: the extra bytes it allocates beyond what already exists.

CUDA: the caching allocator's peak statistics. CPU: the torch profiler's memory events (every
allocation and free through torch's CPU allocator, in order); the peak of their running sum.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager

import torch


@contextmanager
def quiet_stderr():
    """Silence file descriptor 2: Kineto prints start/stop lines from C++ on every profile."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_cpu_bytes(fn: Callable[[], object]) -> int:
    """Peak of allocated-minus-freed bytes during `fn()` on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with quiet_stderr():
        prof.start()
    try:
        result = fn()
        del result
    finally:
        with quiet_stderr():
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch.autograd.DeviceType.CPU]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def peak_cuda_bytes(fn: Callable[[], object], device=None) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return peak


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak extra bytes `fn()` allocates on `device` ('cpu' or 'cuda'), output included."""
    return peak_cuda_bytes(fn) if device == "cuda" else peak_cpu_bytes(fn)
