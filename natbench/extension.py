"""The compiled kernels in csrc/: built once per machine as a torch extension (JIT with ninja,
cached in torch's extensions directory) and loaded once per process.

A failed build never breaks natbench: the backends that need the extension become unavailable
with the compiler's first error as their reason, and every other backend still runs.

Every build, good or failed, leaves a stamp in its build directory naming the sources, flags and
torch it was made from, so that `status()` tells light commands (`natbench list`, `natbench env`)
whether the extension is built without compiling or loading anything.

The CUDA kernels (csrc/cuda/) join the build when torch has CUDA and a CUDA toolkit (nvcc) is
found; they are compiled for the visible GPU's own architecture (torch's default when
TORCH_CUDA_ARCH_LIST is unset). Otherwise the build is CPU-only and says why in `cuda_reason`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from natbench.paths import CSRC, child_python

NAME = "natbench_ext"
STAMP = "natbench-build.json"
NOT_BUILT = "not built yet: `natbench build` compiles it, or the first command that runs it does"
SOURCES = ("bindings.cpp", "cpu/na_cpu.cpp", "cpu/na_cpu_fused_backward.cpp")
CUDA_SOURCES = ("cuda/na_cuda.cpp", "cuda/na_kernels.cu")
NVCCFLAGS = ("-O3", "-std=c++17", "--use_fast_math", "-DNATBENCH_WITH_CUDA")
# -fno-math-errno lets the compiler vectorize exp (glibc's vector math library).
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-std=c++17")
LDFLAGS = ("-fopenmp",)
# NATBENCH_SANITIZE=address,undefined (`make sanitize`) builds the CPU kernels with those sanitizers
# instead: -O1 with frame pointers keeps the reports' stacks readable, and every report aborts.
# -g1 (line tables) gives the reports their files and lines at a fraction of -g's compile time.
# The process must have the sanitizer runtime preloaded (the Makefile's sanitize target does it).
SANITIZE = "NATBENCH_SANITIZE"
SANITIZE_FLAGS = ("-O1", "-g1", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all")


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


@dataclass(frozen=True)
class Plan:
    sources: tuple
    cflags: tuple
    ldflags: tuple
    cuda_reason: str | None  # why the CUDA kernels stay out, or None
    sanitizers: str = ""  # the -fsanitize list of a sanitized build


def _plan() -> Plan:
    """What a build here compiles, and how."""
    sanitizers = os.environ.get(SANITIZE, "").strip()
    if sanitizers:
        sanitize = f"-fsanitize={sanitizers}"
        cflags = tuple(flag for flag in CFLAGS if flag != "-O3") + (*SANITIZE_FLAGS, sanitize)
        return Plan(SOURCES, cflags, (*LDFLAGS, sanitize),
                    f"a build with sanitizers ({SANITIZE}={sanitizers}) is CPU-only", sanitizers)
    cuda_reason = cuda_toolkit()
    if cuda_reason is None:
        return Plan(SOURCES + CUDA_SOURCES, (*CFLAGS, "-DNATBENCH_WITH_CUDA"), LDFLAGS, None)
    return Plan(SOURCES, CFLAGS, LDFLAGS, cuda_reason)


def build_directory() -> Path:
    """Where torch builds the extension: $TORCH_EXTENSIONS_DIR, else a folder of torch's cache per
    Python and accelerator; reading it creates nothing."""
    import torch
    import torch.utils.cpp_extension as cpp

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        accelerator = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
        python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        root = os.path.join(cpp.get_default_build_root(), f"{python}_{accelerator}")
    return Path(root) / NAME


def fingerprint(plan: Plan) -> str:
    """What makes one build differ from another: every file under csrc/ (headers included), where
    it lies (a build of another checkout's sources is another build), the flags and torch."""
    import torch

    digest = hashlib.sha256()
    for part in (str(CSRC), torch.__version__, *plan.sources, *plan.cflags, *NVCCFLAGS, *plan.ldflags):
        digest.update(part.encode() + b"\0")
    for path in sorted(p for p in CSRC.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(CSRC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def status() -> Build | None:
    """The build of these sources and flags on this machine, from its stamp, compiling and loading
    nothing; None when there is none (or its library is gone)."""
    if not (CSRC / SOURCES[0]).exists():
        return _missing_sources()
    plan = _plan()
    try:
        stamp = json.loads((build_directory() / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("fingerprint") != fingerprint(plan):
        return None
    if stamp["ok"] and not Path(stamp["library"]).exists():
        return None
    return Build(stamp["ok"], stamp["reason"], stamp["seconds"], stamp["directory"],
                 tuple(stamp["cflags"]), tuple(stamp["ldflags"]), stamp["cuda"], stamp["cuda_reason"])


def _missing_sources() -> Build:
    return Build(False, f"the C++ sources are missing from {CSRC}; reinstall natbench (pip install "
                 f"natbench, or pip install -e . in a checkout).", 0.0, None)


@lru_cache(maxsize=1)
def build(verbose: bool = False) -> Build:
    """Compile (or reuse the cached build of) csrc/ and load its ops into torch.ops.natbench."""
    begin = time.perf_counter()
    if not (CSRC / SOURCES[0]).exists():
        return _missing_sources()
    plan = _plan()
    directory, library = build_directory(), None
    try:
        import torch.utils.cpp_extension as cpp

        cpp.verify_ninja_availability()
        directory.mkdir(parents=True, exist_ok=True)
        with _compilers_unsanitized(plan):
            library = cpp.load(name=NAME, sources=[str(CSRC / s) for s in plan.sources],
                               extra_cflags=list(plan.cflags), extra_cuda_cflags=list(NVCCFLAGS),
                               extra_ldflags=list(plan.ldflags), build_directory=str(directory), is_python_module=False, verbose=verbose)
        result = Build(True, None, time.perf_counter() - begin, str(directory), plan.cflags,
                       plan.ldflags, cuda=plan.cuda_reason is None, cuda_reason=plan.cuda_reason)
    except Exception as error:  # a compiler error, a missing compiler or ninja
        reason = first_error(str(error))
        result = Build(False, f"the natbench extension did not build: {reason} (`natbench build "
                       f"--verbose` shows the full log)", time.perf_counter() - begin, None)
    _write_stamp(directory, result, fingerprint(plan), library)
    return result


@contextmanager
def _compilers_unsanitized(plan: Plan):
    """A sanitized build's compilers run without the sanitizer runtime this process has preloaded
    (LD_PRELOAD): they need none, and it halves their speed. The library still loads into this
    process, where the runtime is."""
    preload = os.environ.pop("LD_PRELOAD", None) if plan.sanitizers else None
    try:
        yield
    finally:
        if preload is not None:
            os.environ["LD_PRELOAD"] = preload


def _write_stamp(directory: Path, result: Build, digest: str, library: str | None) -> None:
    """Record a build for status(); a folder that cannot be written only costs light commands
    their answer."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / STAMP).write_text(json.dumps({**asdict(result), "fingerprint": digest,
                                                   "library": library}))
    except OSError:
        pass


_BUILD_CODE = "from natbench.extension import build; build()"


def start_build() -> subprocess.Popen:
    """build() in a child process, so that this one can do other work meanwhile (compiling flex
    takes about as long on a 2-core CPU); a later build() here finds it done and only loads it,
    or fails the same way and says why. The child imports this natbench (paths.child_python):
    another checkout's sources would make a different build, which this process would redo."""
    return subprocess.Popen(child_python(_BUILD_CODE), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
