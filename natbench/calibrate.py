"""The machine's attainable matmul FLOP/s and memory bandwidth, measured once per run.

Every row's `pct_of_peak` divides its achieved FLOP/s by this run's matmul figure for the row's
device and dtype; the roofline plot uses the bandwidth too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from natbench.stats import quantile
from natbench.timing import TimingPolicy, sample_adaptively, sampler_for

_POLICY = TimingPolicy(warmup_s=0.2, min_samples=5, min_time_s=0.3, max_time_s=2.0,
                       noise_target=0.02)
# The probe of every round: about 50 ms of a small matmul, long enough for a median of a few dozen
# calls and short enough to cost a run well under a second.
_PROBE_POLICY = TimingPolicy(warmup_s=0.005, min_samples=9, min_time_s=0.03, max_time_s=0.05,
                             noise_target=0.0)


@dataclass(frozen=True)
class Calibration:
    device: str
    dtype: str
    matmul_size: int
    matmul_flops_per_s: float
    copy_bytes: int
    bandwidth_bytes_per_s: float

    def to_record(self) -> dict:
        return {"record": "calibration", **self.__dict__}


def calibrate(device: str, dtype: str) -> Calibration:
    """Best-sample rates of an n x n matmul (2 n^3 FLOPs) and of a large copy (read + write)."""
    import torch

    from natbench.dtypes import torch_dtype

    size = 4096 if device == "cuda" else 1024
    copy_elements = (1 << 28 if device == "cuda" else 1 << 25)
    a = torch.randn(size, size, device=device).to(torch_dtype(dtype))
    b = torch.randn(size, size, device=device).to(torch_dtype(dtype))
    src = torch.empty(copy_elements, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    matmul = sample_adaptively(sampler_for(device, lambda: a @ b), _POLICY).samples
    copy = sample_adaptively(sampler_for(device, lambda: dst.copy_(src)), _POLICY).samples
    return Calibration(device=device, dtype=dtype, matmul_size=size,
                       matmul_flops_per_s=2 * size**3 / min(matmul),
                       copy_bytes=2 * src.numel() * src.element_size(),
                       bandwidth_bytes_per_s=2 * src.numel() * src.element_size() / min(copy))


@lru_cache(maxsize=None)
def _probe_operands(device: str, dtype: str):
    import torch

    from natbench.dtypes import torch_dtype

    size = 2048 if device == "cuda" else 384
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(size, size, generator=generator).to(device=device, dtype=torch_dtype(dtype))
                 for _ in range(2))


def probe(device: str, dtype: str, round_: int) -> dict:
    """The `probe` record of one round: the median rate of a small matmul taken as the round
    starts, the machine's speed at that moment by a control no change to a backend can touch."""
    a, b = _probe_operands(device, dtype)
    samples = sample_adaptively(sampler_for(device, lambda: a @ b), _PROBE_POLICY).samples
    return {"record": "probe", "device": device, "dtype": dtype, "round": round_,
            "matmul_size": a.shape[0], "matmul_flops_per_s": 2 * a.shape[0] ** 3 / quantile(samples, 0.5)}
