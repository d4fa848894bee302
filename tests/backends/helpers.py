"""Shared helpers for backend tests: inputs from a case, and running a backend or skipping."""

import pytest
import torch

from natbench.backends import get_backend, reference
from natbench.dtypes import torch_dtype


def make_inputs(case, dtype=None, seed=0, requires_grad=False, head_dim_v=None):
    generator = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(dtype or case.dtype)
    shape = (case.batch, *case.resolution, case.heads)
    dims = (case.head_dim, case.head_dim, head_dim_v or case.head_dim)
    q, k, v = (torch.randn(*shape, d, generator=generator, dtype=torch.float64) for d in dims)
    rpb = None
    if case.rpb:
        rpb = torch.randn(case.heads, *(2 * k_ - 1 for k_ in case.kernel_size),
                          generator=generator, dtype=torch.float64)
    tensors = [t if t is None else t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v, rpb)]
    return tensors


def backend_or_skip(name, case):
    backend = get_backend(name)
    reason = backend.supports(case)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return backend


def reference_output(case, q, k, v, rpb):
    """The float64 oracle for a backend's op on this case."""
    return reference.neighborhood(*(None if t is None else t.detach().double()
                                    for t in (q, k, v)), case,
                                  None if rpb is None else rpb.detach().double())
