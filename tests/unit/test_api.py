"""The public API: lazy import, argument checks, backend selection."""

import subprocess
import sys

import pytest
import torch

import natbench
from natbench.errors import InvalidProblemError, UnknownBackendError, UnsupportedError


def test_importing_natbench_does_not_import_torch():
    code = "import natbench, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_available_backends_lists_the_pure_torch_ones():
    assert {"reference", "torch", "swin", "swin-explicit", "sdpa"} <= set(natbench.available_backends())


def test_value_error_names_axis_and_numbers():
    q = torch.randn(1, 15, 15, 1, 4)
    with pytest.raises(ValueError, match="axis 1: kernel_size 9 x dilation 2 > length 15"):
        natbench.na2d(q, q, q, (3, 9), dilation=(1, 2))


def test_wrong_rank_and_rpb_shape_are_errors():
    q = torch.randn(1, 8, 8, 2, 4)
    with pytest.raises(InvalidProblemError, match="na1d expects q of 4 dims"):
        natbench.na1d(q, q, q, 3)
    with pytest.raises(InvalidProblemError, match=r"expected \(2, 5, 5\)"):
        natbench.na2d(q, q, q, 3, rpb=torch.zeros(2, 3, 3))


def test_window_backend_is_refused_for_na_and_unknown_names_get_a_suggestion():
    q = torch.randn(1, 8, 8, 1, 4)
    with pytest.raises(UnsupportedError, match="computes wsa attention"):
        natbench.na2d(q, q, q, 3, backend="swin")
    with pytest.raises(UnknownBackendError, match="did you mean 'torch'"):
        natbench.na2d(q, q, q, 3, backend="trch")


def test_auto_backend_runs_autograd_and_different_value_dim():
    q, k = (torch.randn(1, 9, 9, 2, 4, requires_grad=True) for _ in range(2))
    v = torch.randn(1, 9, 9, 2, 6, requires_grad=True)
    out = natbench.na2d(q, k, v, 3)
    assert out.shape == (1, 9, 9, 2, 6)
    out.sum().backward()
    assert q.grad is not None and v.grad is not None
