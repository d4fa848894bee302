"""The backend interface that plugins implement: the public, versioned contract of a backend.

A plugin is a class with this interface, most simply a subclass of `Backend`:

    from natbench.plugin import Backend, Bound, Capabilities

    class MyBackend(Backend):
        name = "my-na"                    # kebab-case, unique among backends
        summary = "My NA kernel."         # one line for `natbench list`
        caps = Capabilities(rpb=False)    # what it supports; supports(case) turns a gap into a sentence

        def forward(self, q, k, v, case, rpb=None, scale=None):
            ...                           # public layout in and out: [B, *spatial, heads, D]

natbench finds plugins through the `natbench.backends` entry-point group of installed packages and
through `--backend-module path/to/file.py` or `--backend-module package.module:Class`.
docs/plugins.md documents every attribute and method, and a complete example package.

INTERFACE is the contract's version. A plugin may declare the version it was written for as the
class attribute `interface`; one newer than this natbench's is refused with its reason.
"""

from __future__ import annotations

from natbench.backends.base import Backend, Bound, Capabilities, default_scale, heads_first
from natbench.case import Case
from natbench.geometry import axis_window

INTERFACE = 1
OPS = ("na", "wsa", "full")
# What every backend has: attributes, then methods. Subclasses of Backend have all of them.
REQUIRED_ATTRIBUTES = ("name", "op", "summary", "caps")
REQUIRED_METHODS = ("supports", "bind", "unavailable_reason", "description")
# Attributes a class that does not subclass Backend may leave out, and what they default to.
OPTIONAL_ATTRIBUTES = {"layout": "[B, *spatial, heads, D] (the public layout)", "compiles": False,
                       "needs_extension": False}

__all__ = ["Backend", "Bound", "Capabilities", "Case", "INTERFACE", "OPS", "axis_window",
           "default_scale", "heads_first", "problem"]


def problem(cls) -> str | None:
    """None when `cls` has the backend interface, else what it lacks, in a sentence."""
    if not isinstance(cls, type):
        return f"{cls!r} is not a class"
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(cls, a)]
    missing += [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        return f"{cls.__name__} lacks {', '.join(missing)} of the backend interface"
    if getattr(cls, "forward", None) is Backend.forward and getattr(cls, "bind", None) is Backend.bind:
        return f"{cls.__name__} implements neither forward nor bind"
    if not isinstance(cls.name, str) or not cls.name or cls.name != cls.name.strip():
        return f"{cls.__name__}.name {cls.name!r} is not a backend name (kebab-case, e.g. 'my-na')"
    if cls.op not in OPS:
        return f"{cls.__name__}.op {cls.op!r} is not one of {', '.join(OPS)}"
    if not isinstance(cls.caps, Capabilities):
        return f"{cls.__name__}.caps is not a natbench.plugin.Capabilities"
    version = getattr(cls, "interface", INTERFACE)
    if not isinstance(version, int) or version > INTERFACE:
        return (f"{cls.__name__} was written for backend interface {version!r}; this natbench has "
                f"{INTERFACE}: upgrade natbench")
    return None
