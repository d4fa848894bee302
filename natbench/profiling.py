"""One case under torch.profiler: traces for TensorBoard and Perfetto, and a per-op breakdown.

The schedule skips `WAIT` steps, warms up for `WARMUP` more, then records `steps` active steps;
each step is one call of the backend (a forward, or forward+backward), inside a record_function
range named `natbench::<backend>` (and an NVTX range on CUDA, for Nsight). Everything the
profiler recorded is attributed to the active step it ran in, so each op gets a mean per step
and a spread across steps. On CUDA, NVML samples of clocks, power and temperature are taken
during the active steps and saved beside the trace.

The breakdown is checked against natbench's own timing of the same call (the sampler of
`natbench run`), so a reader sees how much the profiler itself costs.
"""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from natbench.backends import get_backend
from natbench.case import Case
from natbench.errors import UnsupportedError
from natbench.memory import quiet_stderr

WAIT, WARMUP = 1, 2
GPU_SAMPLE_PERIOD_S = 0.02


@dataclass
class OpStat:
    name: str
    device: str  # "cpu" (host op) or "cuda" (a kernel or memcpy on the GPU)
    calls_per_step: float
    total_s_per_step: float  # inclusive time, mean over active steps
    self_s_per_step: float  # exclusive time, mean over active steps
    self_s_min: float
    self_s_max: float
    share_of_step: float  # self time / step time
    flops_per_step: float | None


@dataclass
class Breakdown:
    backend: str
    case_key: str
    device: str
    steps: int
    step_s: list[float]  # wall time of each active step (ProfilerStep)
    call_s: list[float]  # the natbench::<backend> range of each active step
    measured_s: float | None  # natbench's own median of the same call, outside the profiler
    ops: list[OpStat]
    threads: int  # torch's CPU thread count while profiling
    files: dict = field(default_factory=dict)

    @property
    def self_sum_s(self) -> float:
        """Self time per step summed over every op of one device (the busier one on CUDA)."""
        device = "cuda" if any(o.device == "cuda" for o in self.ops) else "cpu"
        return sum(o.self_s_per_step for o in self.ops if o.device == device)

    def to_record(self) -> dict:
        return {**asdict(self), "self_sum_s": self.self_sum_s}


class _GpuSampler:
    """NVML clocks, power and temperature every GPU_SAMPLE_PERIOD_S in a thread."""

    def __init__(self):
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from natbench.env import gpu_state

        begin = time.perf_counter()
        while not self._stop.is_set():
            state = gpu_state(torch.cuda.current_device())
            self.samples.append({"t_s": time.perf_counter() - begin, **state})
            self._stop.wait(GPU_SAMPLE_PERIOD_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()


def _prepare(case: Case, backend_name: str):
    """(setup, call) of one step of `case` on the backend, after one untimed call."""
    from natbench.runner import _no_grad, _pass_callables, make_inputs

    case.validate()
    backend = get_backend(backend_name)
    reason = backend.supports(case)
    if reason:
        raise UnsupportedError(f"{backend_name} cannot run {case.key}: {reason} Choose another "
                               f"--backend or change the case with --set.")
    bound = backend.bind(case, *make_inputs(case))
    out = bound.fn() if case.needs_backward else _no_grad(bound.fn)
    return _pass_callables(bound, case, out)


def _step_of(event, steps: list) -> int | None:
    """Index of the active step an event ran in: its ProfilerStep ancestor, else its start time."""
    node = event
    while node.cpu_parent is not None:
        node = node.cpu_parent
    if node.name.startswith("ProfilerStep"):
        for index, step in enumerate(steps):
            if step is node:
                return index
    start = event.time_range.start
    for index, step in enumerate(steps):
        if step.time_range.start <= start <= step.time_range.end:
            return index
    return None


def _breakdown(events, backend_name: str, case: Case, measured_s: float | None) -> Breakdown:
    """Per-op statistics over the active steps. The natbench::<backend> range carries the FLOPs
    of the convention (the profiler counts only the matmuls and convolutions it knows)."""
    steps = [e for e in events if e.name.startswith("ProfilerStep")]
    steps.sort(key=lambda e: e.time_range.start)
    n = len(steps)
    step_s = [(s.time_range.end - s.time_range.start) * 1e-6 for s in steps]
    range_name = f"natbench::{backend_name}"
    call_s = [0.0] * n
    per_op: dict[tuple[str, str], dict] = {}
    for event in events:
        if event.name.startswith("ProfilerStep"):
            continue
        index = _step_of(event, steps)
        if index is None:
            continue
        on_gpu = event.device_type == torch.autograd.DeviceType.CUDA
        device = "cuda" if on_gpu else "cpu"
        total = (event.time_range.end - event.time_range.start) * 1e-6
        self_time = (event.self_device_time_total if on_gpu else event.self_cpu_time_total) * 1e-6
        if event.name == range_name and not on_gpu:
            call_s[index] += total
        stat = per_op.setdefault((event.name, device), {"calls": 0, "total": [0.0] * n,
                                                         "self": [0.0] * n, "flops": 0})
        stat["calls"] += 1
        stat["total"][index] += total
        stat["self"][index] += self_time
        stat["flops"] += event.flops or 0
    mean_step = statistics.fmean(step_s)
    ops = [OpStat(name=name, device=device, calls_per_step=s["calls"] / n,
                  total_s_per_step=statistics.fmean(s["total"]), self_s_per_step=statistics.fmean(s["self"]),
                  self_s_min=min(s["self"]), self_s_max=max(s["self"]),
                  share_of_step=statistics.fmean(s["self"]) / mean_step,
                  flops_per_step=s["flops"] / n if s["flops"] else None)
           for (name, device), s in per_op.items()]
    for op in ops:
        if op.name == range_name and op.device == "cpu":
            op.flops_per_step = float(case.flops(get_backend(backend_name).op))
    ops.sort(key=lambda o: (o.device != "cuda", -o.self_s_per_step))
    return Breakdown(backend_name, case.key, case.device, n, step_s, call_s, measured_s, ops,
                     torch.get_num_threads())


def _measure(call, setup, device: str) -> float:
    """natbench's median for the call, with run's sampler and a short budget."""
    from natbench.timing import TimingPolicy, sample_adaptively, sampler_for

    sampler = sampler_for(device, call, setup)
    samples = sample_adaptively(sampler, TimingPolicy(max_time_s=1.0, rounds=1)).samples
    return statistics.median(samples)


def _loop(prof, setup, call, backend_name: str, case: Case, steps: int, sampler) -> None:
    from torch.profiler import record_function

    cuda = case.device == "cuda"
    for step in range(WAIT + WARMUP + steps):
        if sampler is not None and step == WAIT + WARMUP:
            sampler.start()
        if setup:
            setup()
        nvtx = torch.cuda.nvtx.range(f"natbench {backend_name} {case.key}") if cuda else nullcontext()
        with nvtx, record_function(f"natbench::{backend_name}"):
            call()
        if cuda:
            torch.cuda.synchronize()
        prof.step()


def profile_case(case: Case, backend_name: str, steps: int, out_dir: Path) -> Breakdown:
    """Profile `steps` active steps of the case on the backend; write the traces to `out_dir`."""
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    setup, call = _prepare(case, backend_name)
    cuda = case.device == "cuda"
    out_dir.mkdir(parents=True, exist_ok=True)
    tb_dir, trace_path = out_dir / "tensorboard", out_dir / "trace.json"
    # Kineto saves a trace once: the TensorBoard handler writes it, trace.json is a copy of it.
    on_trace_ready = tensorboard_trace_handler(str(tb_dir), worker_name="natbench")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities, schedule=schedule(wait=WAIT, warmup=WARMUP, active=steps, repeat=1),
                   on_trace_ready=on_trace_ready, record_shapes=True, profile_memory=True,
                   with_flops=True)
    sampler = _GpuSampler() if cuda else None
    # fd 2 is silenced while profiling: Kineto prints start/stop lines and allocator notes from
    # C++; a backend's exception still propagates.
    try:
        with quiet_stderr():
            prof.start()
            _loop(prof, setup, call, backend_name, case, steps, sampler)
    finally:
        if sampler is not None:
            sampler.stop()
        with quiet_stderr():
            prof.stop()
    [written] = sorted(tb_dir.glob("natbench.*.pt.trace.json"), key=lambda p: p.stat().st_mtime)[-1:]
    shutil.copyfile(written, trace_path)
    breakdown = _breakdown(prof.events(), backend_name, case, _measure(call, setup, case.device))
    files = {"tensorboard": str(tb_dir), "trace": str(trace_path)}
    if sampler is not None:
        gpu_path = out_dir / "gpu-samples.json"
        gpu_path.write_text(json.dumps(sampler.samples, indent=1))
        files["gpu_samples"] = str(gpu_path)
    breakdown.files = {**files, "breakdown": str(out_dir / "breakdown.json")}
    (out_dir / "breakdown.json").write_text(json.dumps(breakdown.to_record(), indent=1))
    return breakdown
