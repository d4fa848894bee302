"""Synthetic results files: rows with known samples, written through natbench's own writer."""

import math
import random

from natbench import store
from natbench.case import Case
from natbench.stats import median_interval, quantile, summarize

ENV = {"device_kind": "cpu", "gpu_name": None, "cpu_model": "Test CPU", "torch_version": "2.13.0+cpu",
       "cuda_version": None}


def row(backend, kernel, median_s, noise=0.01, n=64, seed=0, memory=1 << 20, check="pass",
        status="ok", op="na", rounds=8, machine=None, round_noise=0.01):
    """One result row of a 56x56 fp32 forward case around `median_s`: `rounds` rounds of n / rounds
    samples (sample noise `noise`), each round scaled by the machine's factor of that round
    (`machine`, a list shared by rows measured side by side, or drawn with `round_noise`)."""
    case = Case.build(2, 1, 4, 32, 56, kernel)
    record = {"record": "row", "backend": backend, "op": op, "label": None, **case.to_record(),
              "case_key": case.key, "status": status, "reason": None if status == "ok" else "cannot",
              "check": check, "max_abs_error": 0.5 if check == "fail" else 1e-7, "tolerance": 1e-4}
    if status != "ok":
        return record
    rng = random.Random(seed)
    factors = machine or [math.exp(rng.gauss(0, round_noise)) for _ in range(rounds)]
    groups = [[median_s * f * math.exp(rng.gauss(0, noise)) for _ in range(max(n // len(factors), 1))]
              for f in factors]
    medians = [quantile(g, 0.5) for g in groups]
    median, low, high, method = median_interval(medians)
    samples = [s for g in groups for s in g]
    flops = case.flops(op)
    return {**record, "samples": len(samples), "samples_s": samples, "stop": "converged",
            "latency_ms_median": median * 1e3, "latency_ms_iqr": summarize(samples).iqr * 1e3,
            "latency_ms_ci_low": low * 1e3, "latency_ms_ci_high": high * 1e3,
            "ci_method": f"rounds/{method}", "rounds": len(medians),
            "round_medians_ms": [m * 1e3 for m in medians], "round_indices": list(range(len(medians))),
            "peak_memory_bytes": memory, "flops": flops, "tflops": flops / median / 1e12,
            "pct_of_peak": 100 * flops / median / 1e11}


def write(path, rows, env=None):
    """A results file with a header, a calibration record and `rows`."""
    writer = store.ResultsWriter(path, {"env": {**ENV, **(env or {})}, "suite": "synthetic",
                                        "command": "tests", "backends": sorted({r["backend"] for r in rows})})
    writer.write({"record": "calibration", "device": "cpu", "dtype": "float32", "matmul_size": 1024,
                  "matmul_flops_per_s": 1e11, "copy_bytes": 1 << 28, "bandwidth_bytes_per_s": 2e10})
    for r in rows:
        writer.write(r)
    writer.close()
    return path


def sweep(path, slowdown=1.0, env=None):
    """natten, swin and a wrong backend over K = 3, 7, 15, 31 (natten `slowdown` x slower)."""
    rows = []
    for i, k in enumerate((3, 7, 15, 31)):
        rows.append(row("natten", k, 1e-3 * k * slowdown, seed=3 * i))
        rows.append(row("swin", k, 0.6e-3 * k, seed=3 * i + 1, memory=1 << 19, op="wsa"))
        rows.append(row("test-wrong", k, 1e-5, seed=3 * i + 2, check="fail"))
    return write(path, rows, env)
