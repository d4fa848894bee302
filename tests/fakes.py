"""Test-only backends: never registered in product code; tests put them in the registry."""

import torch

from natbench.backends.base import Backend, Capabilities


class WrongBackend(Backend):
    """Fast and wrong: returns v unchanged. Must be flagged, never reported as fast."""

    name = "test-wrong"
    summary = "returns v"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        return v * 1


class RaisingBackend(Backend):
    name = "test-raising"
    summary = "raises"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        raise RuntimeError("kernel launch failed on purpose")


class OomBackend(Backend):
    name = "test-oom"
    summary = "runs out of memory"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")


REGISTRY = {
    "test-wrong": ("tests.fakes", "WrongBackend"),
    "test-raising": ("tests.fakes", "RaisingBackend"),
    "test-oom": ("tests.fakes", "OomBackend"),
}
