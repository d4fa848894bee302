"""Test-only backends and a simulated clock: never registered in product code; tests put them in
the registry (and the clock in natbench.timing.CLOCK)."""

import mmap
import os
import time

import torch

from natbench import timing
from natbench.backends.base import Backend, Capabilities


class FakeClock:
    """Simulated time for natbench.timing.CLOCK: every reading moves it on by TICK, and a fake
    backend's call by what it `spend`s. Runs on it are exact and independent of the machine: a
    30 ms call takes 30 ms however busy the host is. A real backend's call costs a tick or two,
    so the sampler's time budgets hold it to a few dozen calls a round."""

    TICK = 1e-3

    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        self.t += self.TICK
        return self.t

    def now_ns(self) -> int:
        return round(self.now() * 1e9)

    def spend(self, seconds: float) -> None:
        self.t += seconds


def spend(seconds: float) -> None:
    """What a fake backend's call costs: simulated time on a FakeClock, else busy real time (a
    slower kernel keeps the CPU busy, as the planted slowdowns of the gate's trials must)."""
    if isinstance(timing.CLOCK, FakeClock):
        timing.CLOCK.spend(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class WrongBackend(Backend):
    """Fast and wrong: returns v unchanged. Must be flagged, never reported as fast."""

    name = "test-wrong"
    summary = "returns v"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        return v * 1


class RaisingBackend(Backend):
    name = "test-raising"
    summary = "raises"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        raise RuntimeError("kernel launch failed on purpose")


class OomBackend(Backend):
    name = "test-oom"
    summary = "runs out of memory"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")


# The planted costs of test-planted: set by tests, or for a child process by benchmarks/gate_trials.py
# through TEST_PLANTED="slowdown,memory".
_planted = os.environ.get("TEST_PLANTED", "1,1").split(",")
PLANTED = {"slowdown": float(_planted[0]), "memory": float(_planted[1])}


def _slowed(inner, case, slowdown: float, extra_bytes: int = 0):
    """The bound call `inner` made `slowdown` x its own time (busy-waiting the difference),
    holding a scratch buffer of `extra_bytes` while it runs."""

    def fn():
        begin = timing.CLOCK.now()
        scratch = torch.empty(extra_bytes, dtype=torch.uint8, device=case.device) if extra_bytes else None
        out = inner.fn()
        del scratch
        spend((slowdown - 1) * (timing.CLOCK.now() - begin))
        return out

    return type(inner)(fn=fn, unpack=inner.unpack, leaves=inner.leaves)


class PlantedBackend(Backend):
    """The torch backend with planted costs: each call takes PLANTED["slowdown"] x its own time
    and, with PLANTED["memory"] = 2, holds a scratch buffer as large as the torch call's measured
    peak (about twice the peak). For the gate's trials."""

    name = "test-planted"
    summary = "torch NA with a planted slowdown and memory increase"
    caps = Capabilities()

    def bind(self, case, q, k, v, rpb=None, scale=None):
        from natbench.backends import get_backend
        from natbench.memory import peak_bytes

        inner = get_backend("torch").bind(case, q, k, v, rpb, scale)
        slowdown, memory = PLANTED["slowdown"], PLANTED["memory"]
        extra = int((memory - 1) * peak_bytes(inner.fn, case.device)) if memory > 1 else 0
        return _slowed(inner, case, slowdown, extra)


class FlakyBackend(Backend):
    """The torch backend, FLAKY_SLOWDOWN x slower in its first `slow_binds` binds (then as fast
    as torch): a machine's slow state that lasts a whole gate run and is gone when the gate
    measures the pair again."""

    name = "test-flaky"
    summary = "torch NA, slowed in its first slow_binds binds"
    caps = Capabilities()
    slow_binds = 0

    def bind(self, case, q, k, v, rpb=None, scale=None):
        from natbench.backends import get_backend

        inner = get_backend("torch").bind(case, q, k, v, rpb, scale)
        if FlakyBackend.slow_binds <= 0:
            return inner
        FlakyBackend.slow_binds -= 1
        return _slowed(inner, case, FLAKY_SLOWDOWN)


FLAKY_SLOWDOWN = 8.0


class SlowBackend(Backend):
    """Correct (the reference's answer) and slow: every call takes at least SLOW_CALL_S, for the
    rounds a pair gets when one sample per round would overrun the time budget."""

    name = "test-slow"
    summary = "reference NA, at least SLOW_CALL_S per call"
    caps = Capabilities()
    calls = 0  # every forward ever made, for tests that count what a measurement costs

    def forward(self, q, k, v, case, rpb=None, scale=None):
        from natbench.backends import reference

        SlowBackend.calls += 1
        begin = timing.CLOCK.now()
        out = reference.neighborhood(q, k, v, case, rpb)
        spend(max(0.0, SLOW_CALL_S - (timing.CLOCK.now() - begin)))
        return out


SLOW_CALL_S = 0.03


class HiccupBackend(SlowBackend):
    """SlowBackend whose second call of a case (a pair's probe) takes HICCUP_S: a machine's
    noisy moment, which must not decide what the pair's calls cost."""

    name = "test-hiccup"
    summary = "reference NA, SLOW_CALL_S per call, HICCUP_S for a case's second call"
    made: dict = {}  # case key -> calls made

    def forward(self, q, k, v, case, rpb=None, scale=None):
        made = type(self).made
        made[case.key] = made.get(case.key, 0) + 1
        if made[case.key] == 2:
            self.second_call()
        return super().forward(q, k, v, case, rpb, scale)

    def second_call(self):
        spend(HICCUP_S)


HICCUP_S = 0.3


def touch_fresh_pages(pages: int) -> None:
    """Write one byte to each of `pages` pages of a fresh anonymous mapping: as many minor faults."""
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as fresh:
        for page in range(pages):
            fresh[page * mmap.PAGESIZE] = 1


class GrowingBackend(HiccupBackend):
    """HiccupBackend whose slow second call faults in 2 MiB of fresh pages and takes GROW_S: a
    call made while the heap grew, which is a warm-up, not a sample."""

    name = "test-growing"
    summary = "reference NA, SLOW_CALL_S per call; a case's second call grows the heap"
    made: dict = {}

    def second_call(self):
        touch_fresh_pages((2 << 20) // mmap.PAGESIZE)
        spend(GROW_S)


GROW_S = 0.2


class CompilingBackend(Backend):
    """Reference NA whose first call of a case "compiles" (spends COMPILE_S): a run must make
    that call before it measures."""

    name = "test-compiling"
    summary = "reference NA with a first call that compiles"
    caps = Capabilities()
    compiles = True
    compiled: set = set()  # case keys whose first call was made

    def forward(self, q, k, v, case, rpb=None, scale=None):
        from natbench.backends import reference

        if case.key not in CompilingBackend.compiled:
            spend(COMPILE_S)
            CompilingBackend.compiled.add(case.key)
        return reference.neighborhood(q, k, v, case, rpb)


COMPILE_S = 0.2


REGISTRY = {
    "test-slow": ("tests.fakes", "SlowBackend"),
    "test-hiccup": ("tests.fakes", "HiccupBackend"),
    "test-growing": ("tests.fakes", "GrowingBackend"),
    "test-compiling": ("tests.fakes", "CompilingBackend"),
    "test-planted": ("tests.fakes", "PlantedBackend"),
    "test-flaky": ("tests.fakes", "FlakyBackend"),
    "test-wrong": ("tests.fakes", "WrongBackend"),
    "test-raising": ("tests.fakes", "RaisingBackend"),
    "test-oom": ("tests.fakes", "OomBackend"),
}


def calibration(device: str, dtype: str):
    """A stand-in for natbench.calibrate.calibrate, for tests that do not test the calibration:
    a fixed record, at once."""
    from natbench.calibrate import Calibration

    return Calibration(device, dtype, 1024, 1e11, 1 << 28, 2e10)


def probe(device: str, dtype: str, round_: int) -> dict:
    """A stand-in for natbench.calibrate.probe: a fixed rate, at once."""
    return {"record": "probe", "device": device, "dtype": dtype, "round": round_,
            "matmul_size": 384, "matmul_flops_per_s": 1e11}
