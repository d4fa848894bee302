"""The compiled kernels in csrc/: built once per machine as a torch extension (JIT with ninja,
cached in torch's extensions directory) and loaded once per process.

A failed build never breaks natbench: the backends that need the extension become unavailable
with the compiler's first error as their reason, and every other backend still runs.

The CUDA kernels (csrc/cuda/) join the build when torch has CUDA and a CUDA toolkit (nvcc) is
found; they are compiled for the visible GPU's own architecture (torch's default when
TORCH_CUDA_ARCH_LIST is unset). Otherwise the build is CPU-only and says why in `cuda_reason`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
NAME = "natbench_ext"
SOURCES = ("bindings.cpp", "cpu/na_cpu.cpp", "cpu/na_cpu_fused_backward.cpp")
CUDA_SOURCES = ("cuda/na_cuda.cpp", "cuda/na_kernels.cu")
NVCCFLAGS = ("-O3", "-std=c++17", "--use_fast_math", "-DNATBENCH_WITH_CUDA")
# -fno-math-errno lets the compiler vectorize exp (glibc's vector math library).
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-std=c++17")
LDFLAGS = ("-fopenmp",)


@dataclass(frozen=True)
class Build:
    ok: bool
    reason: str | None
    seconds: float
    directory: str | None
    cflags: tuple = CFLAGS
    ldflags: tuple = LDFLAGS
    cuda: bool = False
    cuda_reason: str | None = "not built"

    def to_record(self) -> dict:
        return {f"extension_{key}": value for key, value in asdict(self).items()}


def first_error(log: str) -> str:
    """The first compiler or linker error of a build log, or its first line."""
    for line in log.splitlines():
        if re.search(r"\berror\b", line, re.IGNORECASE) and "Error building extension" not in line:
            return line.strip()[:400]
    lines = [line for line in log.splitlines() if line.strip()]
    return lines[0][:400] if lines else "the build failed without output"


def cuda_toolkit() -> str | None:
    """None when the CUDA kernels can be compiled here, else why not."""
    import torch

    if torch.version.cuda is None:
        return "this torch is a CPU-only build"
    import torch.utils.cpp_extension as cpp

    if cpp.CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


@lru_cache(maxsize=1)
def build(verbose: bool = False) -> Build:
    """Compile (or reuse the cached build of) csrc/ and load its ops into torch.ops.natbench."""
    begin = time.perf_counter()
    if not (CSRC / SOURCES[0]).exists():
        return Build(False, f"the C++ sources are missing from {CSRC}; reinstall natbench from a "
                     f"checkout (pip install -e .).", 0.0, None)
    cuda_reason = cuda_toolkit()
    sources, cflags = list(SOURCES), list(CFLAGS)
    if cuda_reason is None:
        sources += CUDA_SOURCES
        cflags.append("-DNATBENCH_WITH_CUDA")
    try:
        import torch.utils.cpp_extension as cpp

        cpp.verify_ninja_availability()
        directory = cpp._get_build_directory(NAME, verbose)
        cpp.load(name=NAME, sources=[str(CSRC / s) for s in sources], extra_cflags=cflags,
                 extra_cuda_cflags=list(NVCCFLAGS), extra_ldflags=list(LDFLAGS),
                 is_python_module=False, verbose=verbose)
    except Exception as error:  # a compiler error, a missing compiler or ninja
        reason = first_error(str(error))
        return Build(False, f"the natbench extension did not build: {reason} (`natbench build "
                     f"--verbose` shows the full log)", time.perf_counter() - begin, None)
    return Build(True, None, time.perf_counter() - begin, directory, tuple(cflags),
                 cuda=cuda_reason is None, cuda_reason=cuda_reason)


_BUILD_CODE = "from natbench.extension import build; build()"


def start_build() -> subprocess.Popen:
    """build() in a child process, so that this one can do other work meanwhile (compiling flex
    takes about as long on a 2-core CPU); a later build() here finds it done and only loads it,
    or fails the same way and says why. The child runs in the folder that holds this natbench,
    so that it imports this one (`python -c` looks in its working folder first): another
    checkout's sources would make a different build, which this process would then redo."""
    return subprocess.Popen([sys.executable, "-c", _BUILD_CODE], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
