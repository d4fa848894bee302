"""The backend registry. Backends load lazily, so listing names imports no torch."""

from __future__ import annotations

from importlib import import_module

from natbench.errors import UnknownBackendError

# name -> (module, class). The order is the order of `natbench list` and of "auto" selection.
_REGISTRY = {
    "reference": ("natbench.backends.reference", "ReferenceBackend"),
    "natten": ("natbench.backends.natten", "NattenBackend"),
    "natten-unfused": ("natbench.backends.natten", "NattenUnfusedBackend"),
    "torch": ("natbench.backends.torch_na", "TorchBackend"),
    "flex": ("natbench.backends.flex", "FlexBackend"),
    "natten-lib": ("natbench.backends.natten_lib", "NattenLibBackend"),
    "swin": ("natbench.backends.swin", "SwinBackend"),
    "swin-explicit": ("natbench.backends.swin", "SwinExplicitBackend"),
    "sdpa": ("natbench.backends.sdpa", "SdpaBackend"),
}
# Order in which backend="auto" tries NA backends: fastest general one first.
AUTO_ORDER = ("natten", "torch", "reference")

_instances: dict = {}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str):
    """The backend instance registered as `name`; unknown names raise with a did-you-mean."""
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownBackendError(
            f"unknown backend {name!r}; {hint}known backends: {', '.join(_REGISTRY)}."
        )
    if name not in _instances:
        module, cls = _REGISTRY[name]
        _instances[name] = getattr(import_module(module), cls)()
    return _instances[name]


def available_backends() -> list[str]:
    """The names of the backends that can run on this machine."""
    return [name for name in _REGISTRY if get_backend(name).unavailable_reason() is None]
