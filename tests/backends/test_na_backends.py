"""Every NA backend against `reference`, on every feature combination it declares."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natbench.backends import get_backend
from natbench.backends.torch_na import forward_peak_bytes, tile_tables
from natbench.case import Case
from natbench.dtypes import tolerance
from natbench.memory import peak_cpu_bytes

from .helpers import backend_or_skip, make_inputs, reference_output

FEATURES = [  # (rank, resolution, kernel, dilation, stride, causal, rpb)
    (1, 17, 5, 1, 1, False, True),
    (1, 17, 4, 3, 2, True, False),
    (2, (9, 14), (3, 5), 1, 1, False, True),
    (2, (9, 14), (4, 3), (2, 1), (1, 3), (False, True), False),
    (2, (12, 12), 6, 2, 1, False, False),
    (2, (8, 11), 3, 1, 3, True, False),
    (3, (5, 6, 7), (3, 2, 3), (1, 2, 1), (1, 1, 2), (True, False, False), False),
    (3, (5, 6, 7), 3, 1, 1, False, True),
]


def _case(rank, resolution, kernel, dilation, stride, causal, rpb, **kw):
    defaults = dict(batch=2, heads=3, head_dim=8)
    defaults.update(kw)
    return Case.build(rank, resolution=resolution, kernel_size=kernel, dilation=dilation,
                      stride=stride, is_causal=causal, rpb=rpb, **defaults)


def _check_forward(name, case, seed=0):
    backend = backend_or_skip(name, case)
    q, k, v, rpb = make_inputs(case, seed=seed)
    expected = reference_output(case, q, k, v, rpb)
    out = backend.forward(q, k, v, case, rpb)
    assert out.shape == expected.shape
    error = (out.double() - expected).abs().max().item()
    assert error <= tolerance(case.dtype), f"{name} max abs error {error:.3g} on {case.key}"
    bound = backend.bind(case, q, k, v, rpb)
    assert torch.equal(bound.unpack(bound.fn()), out), "bind() and forward() disagree"


@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f"r{f[0]}-{f[1]}-k{f[2]}")
@pytest.mark.parametrize("name", ["torch", "flex", "natten-lib"])
def test_forward_matches_reference_fp32(name, features):
    _check_forward(name, _case(*features))


def test_reference_fp32_matches_its_float64_self():
    _check_forward("reference", _case(*FEATURES[3]))


@st.composite
def na_cases(draw):
    rank = draw(st.integers(1, 3))
    resolution, kernel, dilation, stride, causal = [], [], [], [], []
    for _ in range(rank):
        length = draw(st.integers(1, 11 if rank < 3 else 6))
        d = draw(st.integers(1, max(1, min(3, length))))
        k = draw(st.integers(1, length // d))
        resolution.append(length), dilation.append(d), kernel.append(k)
        stride.append(draw(st.integers(1, k)))
        causal.append(draw(st.booleans()))
    rpb = all(k % 2 == 1 for k in kernel) and not any(causal) and all(s == 1 for s in stride) \
        and draw(st.booleans())
    return Case.build(rank, draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                      draw(st.sampled_from([4, 8])), tuple(resolution), tuple(kernel),
                      tuple(dilation), tuple(stride), tuple(causal), rpb)


@settings(max_examples=60, deadline=None)
@given(case=na_cases(), seed=st.integers(0, 2**16))
def test_torch_matches_reference_on_random_shapes(case, seed):
    _check_forward("torch", case, seed)


@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f"r{f[0]}-{f[1]}-k{f[2]}")
def test_torch_gradients_match_reference_autograd_float64(features):
    case = _case(*features, batch=1, heads=2, head_dim=4).with_(dtype="float64", pass_="fwdbwd")
    inputs = make_inputs(case, requires_grad=True)
    grads = []
    for name in ("reference", "torch"):
        out = get_backend(name).forward(*inputs[:3], case, inputs[3])
        leaves = [t for t in inputs if t is not None]
        grads.append(torch.autograd.grad(out, leaves, torch.ones_like(out).cos()))
    for expected, got in zip(*grads):
        assert torch.allclose(got, expected, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["torch", "flex"])
def test_low_precision_error_within_twice_same_precision_reference(name, dtype):
    case = _case(*FEATURES[2]).with_(dtype=dtype)
    backend = backend_or_skip(name, case)
    q, k, v, rpb = make_inputs(case)
    expected = reference_output(case, q, k, v, rpb)
    same_precision = get_backend("reference").forward(q, k, v, case, rpb)
    allowed = tolerance(dtype, (same_precision.double() - expected).abs().max().item())
    error = (backend.forward(q, k, v, case, rpb).double() - expected).abs().max().item()
    assert error <= allowed, f"{name} {dtype}: {error:.3g} > {allowed:.3g}"


@pytest.mark.parametrize("case", [Case.build(2, 1, 4, 32, (40, 44), 7),
                                  Case.build(2, 2, 2, 128, (24, 20), 3),
                                  Case.build(1, 1, 3, 16, 300, 31),
                                  Case.build(3, 1, 2, 32, (6, 9, 10), (3, 5, 3))],
                         ids=["2d-k7", "2d-wide-head", "1d-k31", "3d"])
def test_torch_peak_memory_follows_its_docstring_formula(case):
    q, k, v, _ = make_inputs(case)
    tile_tables(case.geometry, "cpu")
    with torch.no_grad():
        measured = peak_cpu_bytes(lambda: get_backend("torch").forward(q, k, v, case))
    predicted = forward_peak_bytes(case, element_size=4)
    assert 0.97 * predicted <= measured <= 1.03 * predicted, (measured, predicted)


def test_flex_refuses_backward_on_cpu_with_a_reason():
    reason = get_backend("flex").supports(Case.build(2, 1, 1, 8, 8, 3, pass_="fwdbwd"))
    assert reason and "no backward pass on cpu" in reason and "--pass fwd" in reason
