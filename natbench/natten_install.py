"""Install NATTEN, the natten-lib backend's package, the way this machine allows:

    python -m natbench.natten_install VERSION

- a CPU-only torch: NATTEN from PyPI (its pure-Python path; nothing to compile);
- a torch with CUDA: only NATTEN's published wheel for this torch and CUDA (from whl.natten.org),
  never its source build, which compiles its CUDA kernels for a long time; where no wheel is
  reachable, natten-lib stays unavailable and says why. NATBENCH_NATTEN_SOURCE_BUILD=1 opts into
  the source build.
NATTEN is an optional peer: this exits 0 whether or not it installed.
"""

from __future__ import annotations

import subprocess
import sys

WHEELS = "https://whl.natten.org"
SOURCE_BUILD = "NATBENCH_NATTEN_SOURCE_BUILD"


def wheel_requirement(version: str, torch_version: str, cuda_version: str) -> str:
    """NATTEN's wheel tag: natten==0.21.7+torch2130cu130 for torch 2.13.0 and CUDA 13.0."""
    torch_digits = "".join(torch_version.split("+")[0].split(".")[:3])
    return f"natten=={version}+torch{torch_digits}cu{cuda_version.replace('.', '')}"


def pip_command(version: str, torch_version: str, cuda_version: str | None, source_build: bool) -> list[str]:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    if cuda_version is None or source_build:
        return [*pip, "--no-build-isolation", f"natten=={version}"]
    # A wheel or nothing; an unreachable index fails in seconds rather than after pip's retries.
    return [*pip, "--only-binary=:all:", "--retries", "0", "--timeout", "15", "-f", WHEELS,
            wheel_requirement(version, torch_version, cuda_version)]


def main(argv: list[str] | None = None) -> int:
    import os

    import torch

    [version] = argv if argv is not None else sys.argv[1:]
    try:
        import natten

        print(f"natten-lib: NATTEN {natten.__version__} is installed")
        return 0
    except ImportError:
        pass
    source_build = os.environ.get(SOURCE_BUILD) == "1"
    command = pip_command(version, torch.__version__, torch.version.cuda, source_build)
    if subprocess.run(command).returncode == 0:
        print(f"natten-lib: installed NATTEN {version}")
    elif torch.version.cuda is not None and not source_build:
        print(f"natten-lib stays unavailable: no NATTEN {version} wheel for torch {torch.__version__} "
              f"was reachable at {WHEELS} ({wheel_requirement(version, torch.__version__, torch.version.cuda)}); "
              f"{SOURCE_BUILD}=1 builds it from source, which takes long")
    else:
        print("natten-lib stays unavailable: NATTEN did not install")
    return 0


if __name__ == "__main__":
    sys.exit(main())
