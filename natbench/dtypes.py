"""Data types by name, and the one table of correctness tolerances every check uses."""

from __future__ import annotations

from natbench.errors import InvalidProblemError

DTYPES = ("float64", "float32", "bfloat16", "float16")
_ALIASES = {"fp64": "float64", "double": "float64", "fp32": "float32", "float": "float32",
            "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

# Max abs error against a float64 reference, inputs drawn from N(0, 1). Low-precision entries are
# floors: checks also accept up to twice the error of the same-precision pure-torch computation
# (flash-attention's rule), see `tolerance`.
ABS_TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 2e-2, "float16": 4e-3}


def canonical_dtype(name: str) -> str:
    """'fp16' -> 'float16'; unknown names raise with the list of known ones."""
    key = str(name).removeprefix("torch.").lower()
    key = _ALIASES.get(key, key)
    if key not in DTYPES:
        raise InvalidProblemError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    return key


def torch_dtype(name: str):
    import torch

    return getattr(torch, canonical_dtype(name))


def dtype_name(dtype) -> str:
    return canonical_dtype(str(dtype))


def tolerance(dtype: str, same_precision_error: float | None = None) -> float:
    """Allowed max abs error for `dtype`: the table's floor, or 2x the same-precision error."""
    floor = ABS_TOLERANCE[canonical_dtype(dtype)]
    if same_precision_error is None:
        return floor
    return max(floor, 2.0 * same_precision_error)
