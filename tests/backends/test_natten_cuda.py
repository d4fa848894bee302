"""natbench's CUDA kernels (natten, natten-unfused on --device cuda) against the float64 reference.

Skipped where torch sees no GPU; `make cuda-check` compile-checks the kernels everywhere.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natbench.backends import get_backend
from natbench.dtypes import tolerance
from natbench.extension import build

from .helpers import make_inputs
from .test_na_backends import FEATURES, _case, na_cases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible to torch; the CUDA kernels are "
                                       "compile-checked by `make cuda-check` instead")
NAMES = ["natten", "natten-unfused"]


@pytest.fixture(scope="module", autouse=True)
def cuda_extension():
    result = build()
    if not (result.ok and result.cuda):
        pytest.fail(f"on a GPU machine the CUDA kernels must build: {result.reason or result.cuda_reason}")


def _forward_and_grads(name, case, inputs):
    out = get_backend(name).forward(*inputs[:3], case, inputs[3])
    leaves = [t for t in inputs if t is not None]
    return out, torch.autograd.grad(out, leaves, torch.ones_like(out).cos())


def _errors(name, case):
    """Max abs errors of out and each gradient: the backend on CUDA in the case's dtype against
    the reference in float64, and the reference itself in the case's dtype (its own rounding)."""
    inputs = make_inputs(case, requires_grad=True)
    wide = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    expected = _forward_and_grads("reference", case.with_(dtype="float64"), wide)
    results = []
    for backend in (name, "reference"):
        out, grads = _forward_and_grads(backend, case, inputs)
        results.append([(a.double() - b).abs().max().item()
                        for a, b in zip((out, *grads), (expected[0], *expected[1]))])
    return results


@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f"r{f[0]}-{f[1]}-k{f[2]}")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_gradients_match_reference(name, dtype, features):
    case = _case(*features, head_dim=32).with_(device="cuda", dtype=dtype, pass_="fwdbwd")
    got, same_precision = _errors(name, case)
    for what, error, own in zip(("out", "dq", "dk", "dv", "drpb"), got, same_precision):
        # Gradients sum over up to K^rank keys: scale the dtype's tolerance by that count.
        allowed = tolerance(dtype, own) * (1 if what == "out" else case.geometry.window_keys)
        assert error <= allowed, f"{name} {dtype} {what}: {error:.3g} > {allowed:.3g}"


@settings(max_examples=30, deadline=None)
@given(case=na_cases(), seed=st.integers(0, 2**16))
def test_fused_forward_on_random_shapes_fp32(case, seed):
    case = case.with_(device="cuda")
    q, k, v, rpb = make_inputs(case, seed=seed)
    out = get_backend("natten").forward(q, k, v, case, rpb).double()
    wide = [None if t is None else t.double() for t in (q, k, v, rpb)]
    expected = get_backend("reference").forward(*wide[:3], case.with_(dtype="float64"), wide[3])
    assert (out - expected).abs().max().item() <= tolerance("float32")


@pytest.mark.parametrize("head_dim", [16, 64, 128, 256])
def test_fused_kernel_head_dims(head_dim):
    case = _case(*FEATURES[2], head_dim=head_dim).with_(device="cuda")
    q, k, v, rpb = make_inputs(case)
    out = get_backend("natten").forward(q, k, v, case, rpb).double()
    wide = [None if t is None else t.double() for t in (q, k, v, rpb)]
    expected = get_backend("reference").forward(*wide[:3], case.with_(dtype="float64"), wide[3])
    assert (out - expected).abs().max().item() <= tolerance("float32")


def test_float64_on_cuda_is_skipped_with_a_reason():
    case = _case(*FEATURES[0]).with_(device="cuda", dtype="float64")
    assert "float64" in get_backend("natten").supports(case)
