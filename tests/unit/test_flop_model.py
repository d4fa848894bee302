"""The FLOP convention against torch's own FlopCounterMode, for backends built from ATen ops."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from natbench.backends import get_backend
from natbench.backends.torch_na import tile_tables
from natbench.case import Case
from natbench.runner import make_inputs


def _counted(case, backend):
    """FLOPs FlopCounterMode sees; SDPA runs its math path, whose matmuls it counts (it has no
    formula for the fused CPU kernel)."""
    inputs = make_inputs(case)
    bound = get_backend(backend).bind(case, *inputs)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = bound.fn()
        if case.needs_backward:
            out.backward(torch.ones_like(out))
    return counter.get_total_flops()


@pytest.mark.parametrize("pass_", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("backend,op", [("swin", "wsa"), ("swin-explicit", "wsa"), ("sdpa", "full")])
def test_flop_model_matches_flop_counter(backend, op, pass_):
    case = Case.build(2, 2, 3, 16, (14, 21), 7, pass_=pass_)
    assert _counted(case, backend) == case.flops(op)


@pytest.mark.parametrize("pass_", ["fwd", "fwdbwd"])
def test_torch_backend_executes_dense_tiles_beyond_the_useful_flops(pass_):
    """The convention counts useful work only; the tiled backend does [tile, region] products."""
    case = Case.build(2, 2, 3, 16, (14, 21), 7, pass_=pass_)
    tiles, tile_size, region = tile_tables(case.geometry, "cpu").mask.shape
    executed = 4 * case.batch * case.heads * tiles * tile_size * region * case.head_dim
    counted = _counted(case, "torch")
    assert counted == executed * (3 if pass_ == "fwdbwd" else 1)
    assert counted > case.flops("na")
