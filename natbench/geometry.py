"""Neighborhood geometry, exactly as docs/semantics.md defines it. Pure Python, no torch.

Everything here works one axis at a time: a query's key set is the Cartesian product of its
per-axis index sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

from natbench.errors import InvalidProblemError


def as_tuple(value: int | bool | Sequence, rank: int, name: str) -> tuple:
    """Broadcast an int (or bool) to `rank` axes, or check that a sequence has `rank` entries."""
    if isinstance(value, (int, bool)):
        return (value,) * rank
    values = tuple(value)
    if len(values) != rank:
        raise InvalidProblemError(
            f"{name} has {len(values)} entries {values} but the input has {rank} spatial axes; "
            f"pass one int or {rank} values."
        )
    return values


@dataclass(frozen=True)
class NAGeometry:
    """The geometric parameters of one neighborhood-attention call, one entry per spatial axis."""

    resolution: tuple[int, ...]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    is_causal: tuple[bool, ...]

    @classmethod
    def build(cls, resolution, kernel_size, dilation=1, stride=1, is_causal=False) -> NAGeometry:
        resolution = tuple(int(x) for x in resolution)
        rank = len(resolution)
        geometry = cls(
            resolution=resolution,
            kernel_size=tuple(int(x) for x in as_tuple(kernel_size, rank, "kernel_size")),
            dilation=tuple(int(x) for x in as_tuple(dilation, rank, "dilation")),
            stride=tuple(int(x) for x in as_tuple(stride, rank, "stride")),
            is_causal=tuple(bool(x) for x in as_tuple(is_causal, rank, "is_causal")),
        )
        geometry.validate()
        return geometry

    @property
    def rank(self) -> int:
        return len(self.resolution)

    @property
    def tokens(self) -> int:
        return prod(self.resolution)

    @property
    def window_keys(self) -> int:
        """Keys in one full neighborhood: prod(kernel_size)."""
        return prod(self.kernel_size)

    def validate(self, rpb: bool = False) -> None:
        """Raise InvalidProblemError naming the axis and the numbers, per rule 5 of docs/semantics.md."""
        for axis, (length, k, d, s) in enumerate(
            zip(self.resolution, self.kernel_size, self.dilation, self.stride)
        ):
            if k < 1:
                raise InvalidProblemError(f"axis {axis}: kernel_size {k} < 1; use a kernel of 1 or more.")
            if d < 1:
                raise InvalidProblemError(f"axis {axis}: dilation {d} < 1; use a dilation of 1 or more.")
            if k * d > length:
                raise InvalidProblemError(
                    f"axis {axis}: kernel_size {k} x dilation {d} > length {length}; "
                    f"use a kernel of at most {length // d} or a smaller dilation."
                )
            if not 1 <= s <= k:
                raise InvalidProblemError(
                    f"axis {axis}: stride {s} is outside 1..kernel_size {k}; use a stride from 1 to {k}."
                )
        if rpb:
            for axis, (k, s, causal) in enumerate(zip(self.kernel_size, self.stride, self.is_causal)):
                if k % 2 == 0 or causal or s != 1:
                    raise InvalidProblemError(
                        f"axis {axis}: relative positional bias needs an odd kernel, non-causal and "
                        f"stride 1, got kernel_size {k}, is_causal {causal}, stride {s}; drop rpb "
                        f"or change the axis."
                    )

    def keys_per_query_sum(self) -> int:
        """Sum over all queries of the number of keys each attends (for the FLOP convention)."""
        total = 1
        for length, k, d, s, causal in zip(
            self.resolution, self.kernel_size, self.dilation, self.stride, self.is_causal
        ):
            total *= sum(len(axis_window(i, length, k, d, s, causal)) for i in range(length))
        return total


def group_length(length: int, dilation: int, group: int) -> int:
    """Length of dilation group `group` on an axis of `length` (rule 1)."""
    return length // dilation + (1 if group < length % dilation else 0)


def axis_window(i: int, length: int, kernel: int, dilation: int = 1, stride: int = 1,
                causal: bool = False) -> range:
    """Global key indices that query `i` attends on one axis (rules 1-4 of docs/semantics.md)."""
    group, local = i % dilation, i // dilation
    group_len = group_length(length, dilation, group)
    if causal:
        leader = min((local // stride) * stride + stride - 1, group_len - 1)
        first, end = max(leader - kernel + 1, 0), min(local + 1, group_len)
    else:
        leader = min((local // stride) * stride + stride // 2, group_len - 1)
        first = min(max(leader - kernel // 2, 0), group_len - kernel)
        end = first + kernel
    return range(first * dilation + group, end * dilation + group, dilation)
