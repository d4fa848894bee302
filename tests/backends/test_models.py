"""Whole networks on each backend agree with the same network on the reference backend."""

import os

import pytest
import torch

from natbench.models import create

EXTENDED = os.environ.get("NATBENCH_EXTENDED_TESTS") == "1"


@pytest.fixture(scope="module")
def nat_tiny_reference():
    torch.manual_seed(0)
    model = create("nat_tiny", backend="reference").eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        return model.state_dict(), images, model(images)


@pytest.mark.parametrize("backend", ["natten", "torch", "natten-unfused",
                                     pytest.param("flex", marks=pytest.mark.skipif(
                                         not EXTENDED, reason="compiles a kernel per stage shape (about a minute); NATBENCH_EXTENDED_TESTS=1"))])
def test_nat_tiny_at_224_on_each_backend_agrees_with_the_reference(nat_tiny_reference, backend):
    weights, images, expected = nat_tiny_reference
    model = create("nat_tiny", backend=backend).eval()
    model.load_state_dict(weights)
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_swin_tiny_on_swin_and_swin_explicit_agree():
    torch.manual_seed(0)
    sdpa = create("swin_tiny", backend="swin").eval()
    explicit = create("swin_tiny", backend="swin-explicit").eval()
    explicit.load_state_dict(sdpa.state_dict())
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(explicit(images), sdpa(images), atol=1e-4, rtol=1e-4)


def test_a_training_step_runs_backward_through_the_natten_kernels():
    torch.manual_seed(0)
    model = create("nat_mini", backend="natten", image_size=112).train()
    model(torch.randn(2, 3, 112, 112)).logsumexp(-1).mean().backward()
    rpb = model.stages[0][0].attn.rpb
    assert rpb.grad is not None and rpb.grad.abs().sum() > 0
