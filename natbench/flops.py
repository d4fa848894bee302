"""The FLOP convention of docs/semantics.md: count the two products over the keys really attended.

forward = 2 * B * heads * sum_over_queries(n_keys) * (D + Dv); backward = 2 x forward;
forward+backward = 3 x forward. Softmax, scale, bias and masking are not counted.
"""

from __future__ import annotations

from math import prod

from natbench.geometry import NAGeometry

PASS_MULTIPLIER = {"fwd": 1, "bwd": 2, "fwdbwd": 3}


def na_forward_flops(batch: int, heads: int, geometry: NAGeometry, head_dim: int,
                     head_dim_v: int | None = None) -> int:
    """Forward FLOPs of neighborhood attention; causal axes count the keys each query sees."""
    dv = head_dim if head_dim_v is None else head_dim_v
    return 2 * batch * heads * geometry.keys_per_query_sum() * (head_dim + dv)


def wsa_forward_flops(batch: int, heads: int, resolution: tuple[int, ...], window: tuple[int, ...],
                      head_dim: int, head_dim_v: int | None = None) -> tuple[int, int]:
    """(useful, wasted) forward FLOPs of Swin window attention.

    Useful work is w*w keys per real query; the queries of the padding that a map which is not a
    multiple of the window needs are wasted work, reported apart.
    """
    dv = head_dim if head_dim_v is None else head_dim_v
    per_query = 2 * batch * heads * prod(window) * (head_dim + dv)
    real = prod(resolution)
    padded = prod(-(-length // w) * w for length, w in zip(resolution, window))
    return per_query * real, per_query * (padded - real)


def full_forward_flops(batch: int, heads: int, resolution: tuple[int, ...], head_dim: int,
                       head_dim_v: int | None = None) -> int:
    """Forward FLOPs of full self-attention: every query attends all N keys."""
    dv = head_dim if head_dim_v is None else head_dim_v
    n = prod(resolution)
    return 2 * batch * heads * n * n * (head_dim + dv)
