"""natten-lib: the external NATTEN package (PyPI `natten`), an optional peer, never a dependency.

NATTEN uses our public layout (heads last), so no conversion is needed. NATTEN 0.21 has no
relative positional bias, and when kernel_size equals the input size on every axis (non-causal)
it routes the call to its plain attention kernel instead of a neighborhood kernel.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

from natbench.backends.base import Backend, Capabilities

_INSTALL = ("`make natten-lib` installs it: from PyPI with a CPU-only torch, and with CUDA only NATTEN's "
            "published wheel for this torch and CUDA (NATBENCH_NATTEN_SOURCE_BUILD=1 builds it from "
            "source instead, which takes long)")


@lru_cache(maxsize=1)
def _natten():
    try:
        import natten
    except ImportError:
        return None
    return natten


class NattenLibBackend(Backend):
    name = "natten-lib"
    summary = "The NATTEN package's own neighborhood attention (its best path on this device)."
    caps = Capabilities(dtypes=frozenset({"float32", "bfloat16", "float16"}), rpb=False,
                        backward_devices=frozenset({"cuda"}))

    def unavailable_reason(self):
        if _natten() is None:
            return f"the NATTEN package is not installed; {_INSTALL}."
        return None

    def description(self):
        natten = _natten()
        version = f"NATTEN {natten.__version__}" if natten else "NATTEN (not installed)"
        return (f"{version}: {self.summary} On the CPU that is uncompiled FlexAttention; "
                f"kernel_size == input size (non-causal) is routed to plain attention.")

    def forward(self, q, k, v, case, rpb=None, scale=None):
        function = {1: _natten().na1d, 2: _natten().na2d, 3: _natten().na3d}[case.rank]
        with warnings.catch_warnings():
            # On the CPU NATTEN calls FlexAttention uncompiled, which warns on every call (the
            # description says so once), and passes an argument torch deprecated.
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            warnings.filterwarnings("ignore", "return_lse is deprecated", FutureWarning)
            return function(q, k, v, kernel_size=case.kernel_size, stride=case.stride,
                            dilation=case.dilation, is_causal=case.is_causal, scale=scale)
