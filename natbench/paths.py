"""Where natbench's own files lie: the suites and the C++ sources.

A checkout (and an editable install) keeps them at the repository's top level, beside the
package; a wheel carries them inside it (pyproject.toml maps them there), so an installed natbench
finds its suites and builds its kernels wherever it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    inside = PACKAGE_ROOT / name
    return inside if inside.is_dir() else PACKAGE_ROOT.parent / name


SUITES = _shipped("suites")
CSRC = _shipped("csrc")


def child_python(code: str) -> list[str]:
    """The command line of a Python child process that runs `code` with this natbench first on
    its path: another checkout in the child's working folder would otherwise be imported
    instead (`python -c` looks there first)."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(PACKAGE_ROOT.parent)!r}); {code}"]
