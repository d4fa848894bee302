"""Shared helpers for backend tests: inputs from a case, and running a backend or skipping."""

import pytest
import torch

from natbench import runner
from natbench.backends import get_backend


def make_inputs(case, seed=0, requires_grad=False):
    """The runner's inputs for `case`, with gradients when asked."""
    return runner.make_inputs(case.with_(pass_="fwdbwd" if requires_grad else "fwd"), seed)


def backend_or_skip(name, case):
    backend = get_backend(name)
    reason = backend.supports(case)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return backend


def reference_output(case, q, k, v, rpb):
    """The float64 oracle of neighborhood attention on this case."""
    return runner.oracle("na", case, [q, k, v, rpb], None, torch.float64)
