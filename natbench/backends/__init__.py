"""The backend registry: the built-in backends, loaded lazily (listing names imports no torch),
and plugins (natbench/plugin.py): classes found through the `natbench.backends` entry-point group
of installed packages, or loaded from `--backend-module` files and modules. A plugin that does not
load, or lacks the interface, is kept with its reason (`plugin_problems`) and every other backend
still runs."""

from __future__ import annotations

import hashlib
import sys
from importlib import import_module
from pathlib import Path

from natbench.errors import UnknownBackendError

ENTRY_POINT_GROUP = "natbench.backends"
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
_plugins: dict[str, tuple[type, str]] = {}  # name -> (class, where it came from)
_problems: list[tuple[str, str]] = []  # (where, why) of the plugins that did not load
_loaded: set[str] = set()  # entry points (once) and --backend-module specs already loaded


def _discover() -> None:
    """Load the plugins of the `natbench.backends` entry-point group, once per process."""
    if ENTRY_POINT_GROUP in _loaded:
        return
    _loaded.add(ENTRY_POINT_GROUP)
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {point.name} = {point.value}" + (f" ({point.dist.name})" if point.dist else "")
        try:
            cls = point.load()
        except Exception as error:  # the plugin's own import failed: keep the reason, go on
            _problems.append((where, f"{type(error).__name__}: {error}"))
            continue
        _register(cls, where)


def load_module(spec: str) -> None:
    """Load the backends of `--backend-module spec`: a file (`path/to/file.py`, every backend class
    defined in it), a module (`package.module`, likewise) or one class (`package.module:Class`)."""
    if spec in _loaded:
        return
    _loaded.add(spec)
    try:
        classes = _classes_of(spec)
    except Exception as error:  # a missing file, a syntax or import error in the plugin
        _problems.append((spec, f"{type(error).__name__}: {error}"))
        return
    if not classes:
        _problems.append((spec, "defines no backend class (a subclass of natbench.plugin.Backend); "
                                "name one with module:Class"))
    for cls in classes:
        _register(cls, spec)


def _classes_of(spec: str) -> list:
    from natbench.backends.base import Backend

    if spec.endswith(".py"):
        import importlib.util

        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"no such file {path}")
        # A name of its own per file, so that two plugin files called backend.py do not collide.
        name = f"natbench_plugin_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        module_name, _, attribute = spec.partition(":")
        module = import_module(module_name)
        if attribute:
            return [getattr(module, attribute)]
    # Classes with a name of their own: a shared base class in the module is not a backend.
    return [value for value in vars(module).values() if isinstance(value, type)
            and issubclass(value, Backend) and value is not Backend and hasattr(value, "name")
            and value.__module__ == module.__name__]


def _register(cls, where: str) -> None:
    from natbench.plugin import OPTIONAL_ATTRIBUTES, problem

    reason = problem(cls)
    if reason is None and cls.name in _REGISTRY:
        reason = f"its name {cls.name!r} is a built-in backend's"
    if reason is None and cls.name in _plugins and _plugins[cls.name][0] is not cls:
        reason = f"its name {cls.name!r} is also the plugin's from {_plugins[cls.name][1]}"
    if reason:
        _problems.append((where, reason))
        return
    for attribute, default in OPTIONAL_ATTRIBUTES.items():
        if not hasattr(cls, attribute):
            setattr(cls, attribute, default)
    _plugins[cls.name] = (cls, where)


def loaded_modules() -> list[str]:
    """The --backend-module specs loaded in this process (a worker process loads them again)."""
    return sorted(spec for spec in _loaded if spec != ENTRY_POINT_GROUP)


def backend_names() -> list[str]:
    """Every backend: the built-in ones, then the plugins."""
    _discover()
    return [*_REGISTRY, *_plugins]


def origin(name: str) -> str:
    """Where a backend comes from: "built-in", or the plugin's entry point or module."""
    return _plugins[name][1] if name in _plugins else "built-in"


def plugin_problems() -> list[tuple[str, str]]:
    """(where, why) of every plugin that did not load."""
    _discover()
    return list(_problems)


def get_backend(name: str):
    """The backend instance registered as `name`; unknown names raise with a did-you-mean."""
    _discover()
    if name not in _instances:
        if name in _REGISTRY:
            module, cls = _REGISTRY[name]
            _instances[name] = getattr(import_module(module), cls)()
        elif name in _plugins:
            _instances[name] = _plugins[name][0]()
        else:
            import difflib

            names = [*_REGISTRY, *_plugins]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            broken = (f" ({len(_problems)} plugin(s) did not load: `natbench list` says why.)"
                      if _problems else "")
            raise UnknownBackendError(f"unknown backend {name!r}; {hint}known backends: "
                                      f"{', '.join(names)}.{broken}")
    return _instances[name]


def available_backends() -> list[str]:
    """The names of the backends that can run on this machine."""
    return [name for name in backend_names() if get_backend(name).unavailable_reason() is None]
