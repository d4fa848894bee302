"""natbench: benchmark and profile neighborhood attention.

The public API loads torch on first use only, so `natbench --help` stays fast:

    from natbench import na2d, wsa2d, available_backends
"""

__version__ = "0.1.0"

_LAZY = {
    "na1d": "natbench.ops", "na2d": "natbench.ops", "na3d": "natbench.ops",
    "wsa2d": "natbench.ops",
    "available_backends": "natbench.backends", "get_backend": "natbench.backends",
    "Case": "natbench.case",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'natbench' has no attribute {name!r}")
