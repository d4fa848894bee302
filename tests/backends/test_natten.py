"""natbench's compiled CPU kernels (natten, natten-unfused) against the reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natbench.backends import get_backend
from natbench.case import Case
from natbench.dtypes import tolerance
from natbench.extension import build, first_error

from .helpers import make_inputs, reference_output
from .test_na_backends import FEATURES, _case, na_cases

NAMES = ["natten", "natten-unfused"]


@pytest.fixture(scope="module", autouse=True)
def extension():
    result = build()
    if not result.ok:
        pytest.fail(f"the extension must build on a machine with a C++ compiler: {result.reason}")


def _forward_and_grads(name, case, inputs):
    out = get_backend(name).forward(*inputs[:3], case, inputs[3])
    leaves = [t for t in inputs if t is not None]
    return out, torch.autograd.grad(out, leaves, torch.ones_like(out).cos())


@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f"r{f[0]}-{f[1]}-k{f[2]}")
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_gradients_match_reference_float64(name, features):
    case = _case(*features).with_(dtype="float64", pass_="fwdbwd")
    inputs = make_inputs(case, requires_grad=True)
    out, grads = _forward_and_grads(name, case, inputs)
    ref_out, ref_grads = _forward_and_grads("reference", case, inputs)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=1e-9)
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(case=na_cases(), seed=st.integers(0, 2**16))
def test_fused_forward_matches_reference_on_random_shapes_fp32(case, seed):
    q, k, v, rpb = make_inputs(case, seed=seed)
    error = (get_backend("natten").forward(q, k, v, case, rpb).double()
             - reference_output(case, q, k, v, rpb)).abs().max().item()
    assert error <= tolerance("float32")


def _low_precision_error_and_allowance(name, case):
    """The backend's error against the float64 reference, and twice the reference's own error in
    the case's dtype (the tolerance rule for low precision)."""
    q, k, v, rpb = make_inputs(case)
    expected = reference_output(case, q, k, v, rpb)
    same = get_backend("reference").forward(q, k, v, case, rpb)
    allowed = tolerance(case.dtype, (same.double() - expected).abs().max().item())
    return (get_backend(name).forward(q, k, v, case, rpb).double() - expected).abs().max().item(), allowed


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_within_twice_the_same_precision_reference(name, dtype):
    error, allowed = _low_precision_error_and_allowance(name, _case(*FEATURES[2]).with_(dtype=dtype))
    assert error <= allowed


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64_small(name):
    case = Case.build(2, 1, 2, 3, (5, 6), 3, rpb=True, dtype="float64", pass_="fwdbwd")
    inputs = make_inputs(case, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v, rpb: get_backend(name).forward(q, k, v, case, rpb),
                                    inputs)


def test_flop_counter_counts_the_convention():
    from torch.utils.flop_counter import FlopCounterMode

    for name in NAMES:
        case = Case.build(2, 2, 3, 16, (9, 10), 3, is_causal=(True, False), pass_="fwdbwd")
        q, k, v, _ = make_inputs(case, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            get_backend(name).forward(q, k, v, case).sum().backward()
        assert counter.get_total_flops() == case.flops("na"), name


def test_torch_compile_traces_through_the_custom_ops():
    case = Case.build(2, 1, 2, 8, 9, 3, rpb=True)
    q, k, v, rpb = make_inputs(case)
    compiled = torch.compile(lambda q, k, v, rpb: get_backend("natten").forward(q, k, v, case, rpb),
                             fullgraph=True,
                             backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, rpb), get_backend("natten").forward(q, k, v, case, rpb))


def test_the_kernel_refuses_impossible_geometry_with_the_axis_and_numbers():
    q = torch.randn(1, 6, 6, 1, 4)
    with pytest.raises(RuntimeError, match="axis 1: kernel_size 4 x dilation 2 > length 6"):
        torch.ops.natbench.na_fused_forward(q, q, q, None, [3, 4], [1, 2], [1, 1], [False, False], 1.0)


def test_first_error_picks_the_compiler_line():
    log = ("Error building extension 'natbench_ext': [1/3] c++ -c bindings.cpp\nFAILED: x.o\n"
           "csrc/cpu/na_cpu.cpp:12:3: error: 'foo' was not declared in this scope\nmore\n")
    assert first_error(log) == "csrc/cpu/na_cpu.cpp:12:3: error: 'foo' was not declared in this scope"


def test_a_failed_build_makes_natten_unavailable_and_others_still_run(monkeypatch):
    from natbench.backends import natten
    from natbench.extension import Build

    failed = Build(False, "the natbench extension did not build: x.cpp:1: error: boom", 0.1, None)
    monkeypatch.setattr(natten, "build", lambda: failed)
    case = Case.build(2, 1, 1, 4, 8, 3)
    assert "error: boom" in natten.NattenBackend().supports(case)
    assert get_backend("torch").supports(case) is None


@pytest.mark.parametrize("head_dim", [16, 32, 64])
@pytest.mark.parametrize("features", FEATURES[::2], ids=lambda f: f"r{f[0]}-{f[1]}-k{f[2]}")
def test_vector_width_head_dims_match_reference_float64(features, head_dim):
    """Head dims of whole vectors (and more than eight of them) take the register-blocked paths."""
    case = _case(*features, head_dim=head_dim).with_(dtype="float64", pass_="fwdbwd")
    inputs = make_inputs(case, requires_grad=True)
    out, grads = _forward_and_grads("natten", case, inputs)
    ref_out, ref_grads = _forward_and_grads("reference", case, inputs)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=1e-9)
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("head_dim", [32, 44])
@pytest.mark.parametrize("kernel,dilation,causal", [(13, 1, False), (9, 2, False), (11, 1, True)])
def test_windows_of_many_vector_blocks_match_reference_fp32(kernel, dilation, causal, head_dim):
    """Windows wider than one vector and longer than one block of vectors, where the online
    softmax rescales earlier blocks; large logits make a wrong rescale show."""
    case = Case.build(2, 1, 2, head_dim, 28, kernel, dilation, is_causal=causal, rpb=not causal,
                      pass_="fwdbwd")
    q, k, v, rpb = make_inputs(case, seed=3)
    q = (q * 4).requires_grad_()
    k, v = k.requires_grad_(), v.requires_grad_()
    rpb = rpb.requires_grad_() if rpb is not None else None
    out, grads = _forward_and_grads("natten", case, (q, k, v, rpb))
    expected = reference_output(case, q.detach(), k.detach(), v.detach(),
                                rpb.detach() if rpb is not None else None)
    assert (out.double() - expected).abs().max().item() <= tolerance("float32")
    wide = tuple(t.detach().double().requires_grad_() if t is not None else None
                 for t in (q, k, v, rpb))
    _, ref_grads = _forward_and_grads("reference", case.with_(dtype="float64"), wide)
    for got, want in zip(grads, ref_grads):
        assert (got.double() - want).abs().max().item() <= 10 * tolerance("float32")


def test_the_build_child_imports_this_natbench_wherever_the_run_started(tmp_path, monkeypatch):
    # a run started in another checkout must not build that one's sources in the child
    from natbench import extension

    decoy = tmp_path / "natbench"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit(3)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(extension, "_BUILD_CODE", "import natbench.extension")  # no compile
    assert extension.start_build().wait() == 0


# Query tiles (csrc/cpu/na_kernels.h): lines of at least two tiles (16 fp32 or 8 fp64 queries),
# so that every kind of tile runs: plainly shifted in the interior, permuted at the borders and
# under query stride, the last tile of a line or dilation group as a half tile (a rest of at most
# half the lanes: 34 and 36 / 2 in both dtypes, 75 / 3 and 41 in fp64) or a whole one overlapping
# the one before, growing causal windows left to the one-query path.
TILE_FEATURES = [  # (rank, resolution, kernel, dilation, stride, causal, rpb)
    (1, 70, 7, 1, 1, False, True),
    (1, 75, 6, 3, 1, False, False),
    (1, 61, 9, 1, 3, False, False),
    (1, 64, 5, 2, 1, True, False),
    (1, 45, 3, 1, 1, True, False),  # causal: a plainly shifted last tile, overlapping the one before
    (2, (6, 41), (3, 7), 1, 1, False, True),
    (2, (5, 37), (3, 4), (1, 2), (1, 2), (False, True), False),
    (2, (9, 34), 9, 1, 1, False, True),
    (3, (4, 5, 36), (3, 3, 5), (1, 1, 2), 1, False, True),
]


@pytest.mark.parametrize("head_dim", [7, 16, 40])  # under AVX-512: every vector piece of both dtypes, and a scalar tail
@pytest.mark.parametrize("dtype,tolerance_", [("float64", 1e-10), ("float32", 2e-5)])
@pytest.mark.parametrize("features", TILE_FEATURES, ids=lambda f: f"r{f[0]}-{f[1]}-k{f[2]}")
def test_query_tiles_forward_and_gradients_match_reference(features, dtype, tolerance_, head_dim):
    case = _case(*features, batch=1, heads=2, head_dim=head_dim).with_(dtype=dtype, pass_="fwdbwd")
    inputs = make_inputs(case, seed=5, requires_grad=True)
    out, grads = _forward_and_grads("natten", case, inputs)
    wide = tuple(t.detach().double().requires_grad_() if t is not None else None for t in inputs)
    ref_out, ref_grads = _forward_and_grads("reference", case.with_(dtype="float64"), wide)
    assert (out.double() - ref_out).abs().max().item() <= tolerance_
    for got, expected in zip(grads, ref_grads):
        assert (got.double() - expected).abs().max().item() <= 10 * tolerance_


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_query_tiles_in_low_precision_within_twice_the_same_precision_reference(dtype):
    case = _case(*TILE_FEATURES[0], batch=1, heads=2, head_dim=40).with_(dtype=dtype)
    error, allowed = _low_precision_error_and_allowance("natten", case)
    assert error <= allowed
