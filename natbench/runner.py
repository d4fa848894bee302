"""Per case and backend: validate -> supports -> prepare -> check vs reference -> memory -> time.

Every outcome is a row: an impossible case or an unsupported backend is `skipped` with its reason,
an exception is `error`, an out-of-memory is `oom`, a call slower than the whole time budget is
`timeout` (its one measured call is kept). A backend whose output is outside its dtype's tolerance
keeps its timings but is flagged `check: fail`.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, field

import torch

from natbench import timing
from natbench.backends import get_backend, reference
from natbench.case import Case, ModelCase, case_from_record
from natbench.dtypes import tolerance, torch_dtype
from natbench.errors import InvalidProblemError
from natbench.memory import peak_bytes
from natbench.schedule import rounds_for
from natbench.stats import latency_fields, median_interval, quantile
from natbench.suite import Point
from natbench.timing import TimingPolicy, sample_adaptively, sampler_for

# Above this many logits (B * heads * N * N) the oracle checks a sample of query rows only.
_ORACLE_FULL_LIMIT = 1 << 24
_ORACLE_ROWS = 512
# A call that faulted in this many fresh pages (1 MiB of 4 KiB pages) or more grew the heap.
_FRESH_PAGES = 256
# At most this many such calls are set aside before the next call is kept as it is.
_RETAKES = 3


@dataclass
class RunContext:
    policy: TimingPolicy
    calibrations: dict = field(default_factory=dict)  # (device, dtype) -> calibration record
    seed: int = 0
    compile_s: dict = field(default_factory=dict)  # (case key, backend) -> seconds, compile_ahead
    _oracle: dict = field(default_factory=dict)


def make_inputs(case: Case, seed: int = 0):
    """q, k, v (and NAT's rpb table when the case has one), N(0, 1), on the case's device."""
    generator = torch.Generator().manual_seed(seed)
    shape = (case.batch, *case.resolution, case.heads, case.head_dim)
    dtype = torch_dtype(case.dtype)
    tensors = [torch.randn(shape, generator=generator) for _ in range(3)]
    if case.rpb:
        tensors.append(torch.randn(case.heads, *(2 * k - 1 for k in case.kernel_size),
                                   generator=generator))
    else:
        tensors.append(None)
    return [None if t is None else t.to(case.device, dtype).requires_grad_(case.needs_backward)
            for t in tensors]


def oracle_rows(case: Case) -> torch.Tensor | None:
    """None for a full check, else the flat query rows to check: both ends and a spread."""
    if case.batch * case.heads * case.tokens ** 2 <= _ORACLE_FULL_LIMIT:
        return None
    generator = torch.Generator().manual_seed(1)
    ends = torch.cat([torch.arange(64), torch.arange(case.tokens - 64, case.tokens)])
    spread = torch.randint(0, case.tokens, (_ORACLE_ROWS - 128,), generator=generator)
    return torch.unique(torch.cat([ends, spread]))


def oracle(op: str, case: Case, inputs, rows, dtype: torch.dtype):
    """The reference's output for the backend's operator, in `dtype`, on `rows` (None = all)."""
    q, k, v, rpb = (None if t is None else t.detach().to(dtype) for t in inputs)
    if op == "na":
        return reference.neighborhood(q, k, v, case, rpb, rows=rows)
    if op == "wsa":
        from natbench.backends.swin import swin_table_from_rpb

        table = None if rpb is None else swin_table_from_rpb(rpb)
        return reference.window(q, k, v, case.kernel_size, False, table, rows=rows)
    return reference.full(q, k, v, rows=rows)


def check_output(out, op: str, case: Case, inputs, context: RunContext) -> dict:
    """max abs error against the float64 oracle and the dtype's tolerance; cached per case."""
    key = (op, case.with_(pass_="fwd"))
    if key not in context._oracle:
        rows = oracle_rows(case)
        expected = oracle(op, case, inputs, rows, torch.float64)
        same_precision_error = None
        if case.dtype in ("bfloat16", "float16"):
            low = oracle(op, case, inputs, rows, torch_dtype(case.dtype))
            same_precision_error = (low.double() - expected).abs().max().item()
        # Keep the current case's oracles only (one per operator): memory stays bounded.
        context._oracle = {k: v for k, v in context._oracle.items() if k[1] == key[1]}
        context._oracle[key] = (rows, expected, tolerance(case.dtype, same_precision_error))
    rows, expected, allowed = context._oracle[key]
    got = out.detach().double()
    if rows is not None:
        got = got.reshape(case.batch, case.tokens, case.heads, -1)[:, rows.to(got.device)]
    error = (got - expected).abs().max().item()
    if math.isnan(error):
        error = math.inf
    return {"max_abs_error": error, "tolerance": allowed,
            "check": "pass" if error <= allowed else "fail",
            "checked_rows": case.tokens if rows is None else len(rows)}


def _pass_callables(bound, case: Case, out):
    """(setup, timed) for the case's pass; grads are cleared in setup, outside timing."""
    leaves = [t for t in bound.leaves if t is not None and t.requires_grad]

    def clear():
        for leaf in leaves:
            leaf.grad = None

    if case.pass_ == "fwd":
        return None, lambda: _no_grad(bound.fn)
    grad_out = torch.randn_like(out)
    if case.pass_ == "fwdbwd":
        return clear, lambda: bound.fn().backward(grad_out)
    graph = bound.fn()  # bwd: one forward, then time backward over the kept graph
    return clear, lambda: graph.backward(grad_out, retain_graph=True)


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text or "bad_alloc" in text


def row_base(point: Point, backend_name: str) -> dict:
    """The fields of a pair's row that say which pair it is."""
    op = "model" if isinstance(point.case, ModelCase) else get_backend(backend_name).op
    return {"record": "row", "backend": backend_name, "op": op, "label": point.label,
            **point.case.to_record(), "case_key": point.case.key, "status": "ok", "reason": None}


def _supports(case, backend) -> str | None:
    if isinstance(case, ModelCase):
        from natbench import models

        return models.supports(backend, case)
    return backend.supports(case)


def _bind(case, backend, seed: int):
    """(bound, inputs, fields): the case ready to time, the inputs its check needs, and the
    fields it adds to its row (a network's parameters and MACs)."""
    if isinstance(case, ModelCase):
        from natbench import models

        bound, fields = models.bind(case, backend.name, seed)
        return bound, None, fields
    inputs = make_inputs(case, seed)
    return backend.bind(case, *inputs), inputs, {}


def run_pair(point: Point, backend_name: str, context: RunContext, timed: bool = True) -> dict:
    """One result row. With `timed=False` only the correctness check runs (natbench verify)."""
    case = point.case
    backend = get_backend(backend_name)
    record = row_base(point, backend_name)
    try:
        case.validate()
    except InvalidProblemError as error:
        return {**record, "status": "skipped", "reason": str(error)}
    reason = _supports(case, backend)
    if reason:
        return {**record, "status": "skipped", "reason": reason}
    try:
        return {**record, **_measure(case, backend, context, timed)}
    except Exception as error:  # one failing case must never stop a sweep
        status = "oom" if _is_oom(error) else "error"
        return {**record, "status": status, "reason": f"{type(error).__name__}: {error}"[:2000]}
    finally:
        if case.device == "cuda":
            torch.cuda.empty_cache()


def compile_ahead(pairs: list[tuple[Point, str]], seed: int = 0) -> dict[tuple[str, str], float]:
    """The first call of every pair whose backend compiles (flex), made before measuring: seconds
    per (case key, backend), bind included. Only compiled code is kept; a pair that fails here is
    left for its measurement to fail and record why."""
    seconds = {}
    for point, name in pairs:
        case, backend = point.case, get_backend(name)
        if not backend.compiles or _supports(case, backend):
            continue
        begin = timing.CLOCK.now()
        try:
            case.validate()
            _first_call(_bind(case, backend, seed)[0], case)
        except Exception:  # measured again, and recorded, in its own row
            continue
        seconds[(case.key, name)] = timing.CLOCK.now() - begin
    return seconds


def _first_call(bound, case: Case):
    """(output, seconds) of the bound call's first, untimed-by-the-sampler run (with a graph when
    the pass needs backward)."""
    begin = timing.CLOCK.now()
    out = bound.fn() if case.needs_backward else _no_grad(bound.fn)
    if case.device == "cuda":
        torch.cuda.synchronize()
    return out, timing.CLOCK.now() - begin


def _cpu_forward(case: Case) -> bool:
    """A CPU forward pass: its first call after binding is the timed call itself (no graph to
    build, no events or L2 flush), so that call can serve as a measurement, of memory in round 0
    and as a sample in later rounds."""
    return case.device == "cpu" and case.pass_ == "fwd"


def _measure(case: Case, backend, context: RunContext, timed: bool) -> dict:
    bound, inputs, fields = _bind(case, backend, context.seed)
    # On the CPU a forward pass's first call is also its memory pass: its peak equals a later
    # call's (checked on 67 CPU forward pairs of kernel-sizes, smoke and dtypes) and the
    # profiler's allocation events cost microseconds, so the call is not made twice (NATTEN's
    # CPU path: ~1 s a pair). CUDA (workspaces allocated on a first use) and backward passes
    # (whose timed call differs from the first) keep a memory pass of their own.
    memory_first = timed and _cpu_forward(case)
    if memory_first:
        kept = []
        peak = peak_bytes(lambda: kept.append(_first_call(bound, case)), case.device)
        out, first_call_s = kept.pop()
    else:
        out, first_call_s = _first_call(bound, case)
    if isinstance(case, ModelCase):
        from natbench import models

        checked = models.check(case, backend.name, out, fields.pop("rpb"), context.seed, context._oracle)
    else:
        checked = check_output(bound.unpack(out), backend.op, case, inputs, context)
    result = {"first_call_s": first_call_s, "layout_in_timing": isinstance(case, ModelCase),
              "compile_s": context.compile_s.get((case.key, backend.name)), **fields, **checked}
    if not timed:
        return result
    setup, call = _pass_callables(bound, case, out)
    del out
    if setup:
        setup()
    result["peak_memory_bytes"] = peak if memory_first else peak_bytes(call, case.device)
    sampler = sampler_for(case.device, call, setup)
    policy = context.policy.for_backend(backend.name)
    # A probe call: one slower than the whole sampling budget is reported from that one clean
    # sample as a timeout instead of being sampled. It follows the first call (and the memory
    # pass, where that is a call of its own), so when a call is at least as long as the warm-up
    # the probe was taken warm and is the round's first sample: a slow call is not made once
    # more only to be dropped. With the run's allocator thresholds pinned a pair's second call is
    # as fast as its third (call / median of calls 4-9: 0.99-1.07 against 1.00-1.05, medians per
    # backend over 10 binds).
    probe, result["retaken_s"] = _steady_call(sampler)
    # What a call costs, for the timeout and the rounds: the faster of the probe and a forward
    # pass's first call (the same call; a backward pass's first call is its forward alone). The
    # machine's noise only adds time, so one slow probe must not cost a pair its rounds, or make
    # a timeout row of a pair that fits.
    cost = min(probe, first_call_s) if case.pass_ == "fwd" else probe
    if cost > policy.max_time_s:
        result.update(_timing_fields([[probe]], "timeout", case, backend.op, context))
        result.update(status="timeout", reason=f"one call took {probe:.2f} s, over the "
                      f"{policy.max_time_s:g} s budget; raise --max-time to measure it fully")
        return result
    planned = rounds_for(policy, cost)
    round_policy = policy.per_round(planned, warm_call_s=probe)
    timing = sample_adaptively(sampler, round_policy,
                               taken=[probe] if round_policy.warmup_s == 0 else [])
    result.update(samples_s=timing.samples, stop=timing.stop, threads=torch.get_num_threads(),
                  rounds_planned=planned)
    return result


def time_again(point: Point, backend_name: str, context: RunContext, planned: int) -> dict:
    """A later round (of `planned`) of a pair whose first round was ok: bind again, call once,
    sample.

    On the CPU the forward pass's call after binding is made by the sampler, and when it is at
    least as long as the warm-up it is the round's first sample, as the probe is in round 0: in
    later rounds such a call is no slower than the calls after it (first call / median of the
    next four: 0.95-1.07 over pairs of 4 ms to 1.1 s, as the second call is to the rest). Passes with a backward first build a graph, and a CUDA call is timed with
    events and a flushed L2: their first call stays an untimed warm-up."""
    case, backend = point.case, get_backend(backend_name)
    policy = context.policy.for_backend(backend_name)
    try:
        bound = _bind(case, backend, context.seed)[0]
        timed_first = _cpu_forward(case)
        out, first = (None, 0.0) if timed_first else _first_call(bound, case)
        setup, call = _pass_callables(bound, case, out)
        del out
        sampler = sampler_for(case.device, call, setup)
        retaken = []
        if timed_first:
            first, retaken = _steady_call(sampler)
        round_policy = policy.per_round(planned, first)
        taken = [first] if timed_first and round_policy.warmup_s == 0 else []
        timing = sample_adaptively(sampler, round_policy, taken=taken)
        return {"status": "ok", "samples_s": timing.samples, "stop": timing.stop,
                "retaken_s": retaken}
    except Exception as error:
        status = "oom" if _is_oom(error) else "error"
        return {"status": status, "reason": f"{type(error).__name__}: {error}"[:2000]}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _steady_call(sampler) -> tuple[float, list[float]]:
    """One call to take as a sample without a warm-up (a round's probe, or its first call), and
    the calls set aside before it: a call that faulted in _FRESH_PAGES or more ran while the heap
    grew to a new high-water mark, which a steady loop has behind it. The kernel maps and zeroes
    each such page (15 us or more a 4 KiB page on a small VM: NATTEN's 0.7 s CPU call takes up to
    3.7 s when it faults in hundreds of MiB). Other pairs' allocations split the heap's free
    space, so it grows in steps through the first minute of a run, and a call after one that grew
    it may grow it again. Up to _RETAKES calls are set aside; the call after them is kept however
    many pages it faults in (a backend that faults on every call pays that in every sample)."""
    set_aside = []
    while True:
        before = _minor_faults()
        sample = sampler(1)[0]
        if _minor_faults() - before < _FRESH_PAGES or len(set_aside) == _RETAKES:
            return sample, set_aside
        set_aside.append(sample)


def _no_grad(fn):
    with torch.no_grad():
        return fn()


_ROUND_ONLY = ("round", "started_at", "round_s", "other_cpu_s", "stolen_cpu_s", "retaken_s")


def merge_rounds(rounds: list[dict], context: RunContext) -> dict:
    """The result row of a pair from its rounds (the first carries checks and memory).

    The rounds, spread over the whole run, are the row's independent draws of the machine's
    state: the median is the median of the round medians and the 95% CI is built from them
    (stats.median_interval), so drift and noisy episodes of the machine between rounds widen the
    CI instead of hiding behind many correlated samples of one moment. The other latency fields
    come from the rounds' samples pooled with one weight per round (stats.equal_weight: a noisy
    round, which the adaptive sampler samples longest, does not outvote the others).
    """
    first = rounds[0]
    row = {k: v for k, v in first.items() if k not in _ROUND_ONLY}
    row.update(record="row", measure_s=sum(r.get("round_s", 0.0) for r in rounds))
    for key in ("other_cpu_s", "stolen_cpu_s"):  # what else ran on the machine meanwhile
        if all(key in r for r in rounds):
            row[key] = sum(r[key] for r in rounds)
    if first["status"] != "ok":  # skipped, error, oom, or a timeout with its one sample
        return row
    failed = [r for r in rounds[1:] if r["status"] != "ok"]
    if failed:
        return {**row, "status": failed[0]["status"], "reason": failed[0]["reason"]}
    case = case_from_record(first)
    samples = [r["samples_s"] for r in rounds]
    stop = ",".join(sorted({r["stop"] for r in rounds}))
    medians = [quantile(r["samples_s"], 0.5) for r in rounds]
    # the round medians are the draws; a single round's are its samples
    draws, over = (medians, "rounds") if len(rounds) > 1 else (samples[0], "samples")
    median, low, high, method = median_interval(draws)
    row.update(_timing_fields(samples, stop, case, first["op"], context, (low, high), median),
               ci_method=f"{over}/{method}", rounds=len(rounds),
               round_medians_ms=[m * 1e3 for m in medians], round_indices=[r["round"] for r in rounds])
    return row


def _timing_fields(samples: list[list[float]], stop: str, case: Case, op: str, context: RunContext,
                   ci: tuple[float, float] | None = None, median: float | None = None) -> dict:
    fields = latency_fields(samples, ci, median)
    flops = case.flops(op)
    tflops = flops / (fields["latency_ms_median"] * 1e-3) / 1e12
    calibration = context.calibrations.get((case.device, case.dtype))
    pct = None if calibration is None else 100 * tflops * 1e12 / calibration["matmul_flops_per_s"]
    extra = {"images_per_s": case.batch / (fields["latency_ms_median"] * 1e-3)} if isinstance(case, ModelCase) else {}
    return {**fields, "stop": stop, "flops": flops, "tflops": tflops, "pct_of_peak": pct, **extra}
