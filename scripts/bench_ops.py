"""Forward latency and measured peak memory of each backend on one NA problem (issue 2's check).

B=1, heads=4, 56x56, D=32, K=7, fp32 by default; medians of repeated calls after a warm-up.
"""

import argparse
import statistics
import time

import torch

from natbench.backends import get_backend
from natbench.case import Case
from natbench.memory import peak_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="torch,swin,swin-explicit,sdpa,flex,natten-lib")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    case = Case.build(2, 1, 4, 32, 56, 7)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 56, 56, 4, 32, generator=generator) for _ in range(3))
    print(f"B=1 heads=4 56x56 D=32 K=7 fp32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'backend':<14}{'first call ms':>14}{'median ms':>11}{'min ms':>9}{'peak MiB':>10}")
    for name in args.backends.split(","):
        backend = get_backend(name)
        reason = backend.supports(case)
        if reason:
            print(f"{name:<14}skipped: {reason}")
            continue
        with torch.no_grad():
            bound = backend.bind(case, q, k, v)
            start = time.perf_counter()
            bound.fn()
            first = time.perf_counter() - start
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                bound.fn()
                samples.append(time.perf_counter() - start)
            peak = peak_bytes(bound.fn, "cpu")
        print(f"{name:<14}{first * 1e3:>14.1f}{statistics.median(samples) * 1e3:>11.2f}"
              f"{min(samples) * 1e3:>9.2f}{peak / 2**20:>10.1f}")


if __name__ == "__main__":
    main()
