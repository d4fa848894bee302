"""The identities of docs/semantics.md and Swin's own properties."""

import pytest
import torch

from natbench import na2d, wsa2d
from natbench.backends import get_backend
from natbench.case import Case

from .helpers import make_inputs


def _inputs(shape, heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, *shape, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)]


def _sdpa(q, k, v):
    case = Case.build(q.dim() - 3, q.shape[0], q.shape[-2], q.shape[-1], tuple(q.shape[1:-2]), 1)
    return get_backend("sdpa").forward(q, k, v, case)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_kernel_equal_to_map_is_full_attention(backend):
    q, k, v = _inputs((6, 9))
    torch.testing.assert_close(na2d(q, k, v, (6, 9), backend=backend), _sdpa(q, k, v))


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_kernel_one_returns_v(backend):
    q, k, v = _inputs((5, 7))
    torch.testing.assert_close(na2d(q, k, v, 1, backend=backend), v)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_stride_equal_kernel_is_window_attention(backend):
    q, k, v = _inputs((12, 8))
    torch.testing.assert_close(na2d(q, k, v, 4, stride=4, backend=backend), wsa2d(q, k, v, 4))


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_dilation_is_na_on_interleaved_subgrids(backend):
    q, k, v = _inputs((11, 10))
    dilation = (3, 2)
    out = na2d(q, k, v, 3, dilation=dilation, backend=backend)
    for gy in range(3):
        for gx in range(2):
            sub = [t[:, gy::3, gx::2] for t in (q, k, v)]
            torch.testing.assert_close(out[:, gy::3, gx::2], na2d(*sub, 3, backend=backend))


@pytest.mark.parametrize("backend", ["swin", "swin-explicit", "reference"])
def test_window_equal_to_map_is_full_attention(backend):
    q, k, v = _inputs((7, 7))
    torch.testing.assert_close(wsa2d(q, k, v, 7, backend=backend), _sdpa(q, k, v))


@pytest.mark.parametrize("shape,window", [((8, 8), 4), ((10, 13), (4, 3))])
def test_shifted_windows_never_mix_regions(shape, window):
    """A query's keys (read off autograd) all lie within one window's span, never across the
    wrap-around of the cyclic roll, and interior queries see a full window."""
    q, k, v = _inputs(shape, heads=1, dim=2)
    window = (window, window) if isinstance(window, int) else window
    v.requires_grad_(True)
    out = wsa2d(q, k, v, window, shifted=True, backend="swin")
    shift = [w // 2 for w in window]
    for y in range(shape[0]):
        for x in range(shape[1]):
            (grad,) = torch.autograd.grad(out[0, y, x].sum(), v, retain_graph=True)
            keys = (grad[0].abs().sum((-1, -2)) > 0).nonzero().tolist()
            assert all(abs(ky - y) < window[0] and abs(kx - x) < window[1] for ky, kx in keys)
            interior = all(s <= c < (n // w) * w - w + s for c, s, n, w in
                           zip((y, x), shift, shape, window))
            if interior:
                assert len(keys) == window[0] * window[1]


def test_swin_pads_and_masks_padded_keys():
    q, k, v = _inputs((9, 9))
    out = wsa2d(q, k, v, 4)
    # The last window holds only row/column 8: attention over that single token returns v.
    torch.testing.assert_close(out[:, 8, 8], v[:, 8, 8])
    torch.testing.assert_close(out, wsa2d(q, k, v, 4, backend="reference"))


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("backend", ["swin", "swin-explicit"])
def test_swin_with_bias_matches_reference_values_and_gradients(backend, shifted):
    q, k, v = _inputs((10, 9))
    table = torch.randn(7 * 9, 2, dtype=torch.float64)
    leaves = [t.requires_grad_(True) for t in (q, k, v, table)]
    results = []
    for name in (backend, "reference"):
        out = wsa2d(q, k, v, (4, 5), shifted=shifted, rpb=table, backend=name)
        results.append((out, torch.autograd.grad(out.sin().sum(), leaves)))
    torch.testing.assert_close(results[0][0], results[1][0])
    for got, expected in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, expected)


def test_swin_backend_on_a_case_uses_window_equal_kernel_and_nat_bias():
    case = Case.build(2, 1, 2, 8, (14, 14), 7, rpb=True, dtype="float64")
    q, k, v, rpb = make_inputs(case)
    from natbench.backends.swin import swin_table_from_rpb

    expected = wsa2d(q, k, v, 7, rpb=swin_table_from_rpb(rpb), backend="reference")
    torch.testing.assert_close(get_backend("swin").forward(q, k, v, case, rpb), expected)
    bound = get_backend("swin").bind(case, q, k, v, rpb)
    torch.testing.assert_close(bound.unpack(bound.fn()), expected)
