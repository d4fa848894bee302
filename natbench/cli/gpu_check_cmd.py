"""natbench gpu-check: the one-shot check of natbench on a GPU (natbench/gpucheck.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options


def gpu_check(out: Annotated[Optional[Path], typer.Option(help="Folder for everything it writes; default results/gpu/<gpu-name>/.")] = None,
              budget: Annotated[float, typer.Option(min=10, help="Seconds for the whole check, enforced: each step is killed at its share of what is left.")] = 480.0,
              device: Annotated[str, typer.Option(help="cuda; cpu rehearses the same steps on the CPU.")] = "cuda",
              backend: options.Backends = None, set_: options.Sets = None) -> None:
    """Build the CUDA kernels, refuse malformed inputs, verify every backend, run the smoke suite
    and a float16/bfloat16 kernel-size sweep, and write a report, plots, a profile and a summary,
    within one time budget. Exit 0 when every step passed, 1 when one did not, 2 without CUDA."""
    from natbench import gpucheck
    from natbench.env import RESULTS_DIR
    from natbench.errors import NatbenchError

    if device not in ("cuda", "cpu"):
        raise NatbenchError(f"--device {device}: gpu-check runs on cuda, or rehearses on cpu.")
    name = gpucheck.device_name(device)
    if name is None:
        import torch

        typer.echo(f"gpu-check: no CUDA device is visible (torch {torch.__version__}, CUDA "
                   f"{torch.version.cuda or 'none in this build'}); it runs on a machine with an NVIDIA GPU. "
                   f"`natbench gpu-check --device cpu` rehearses its steps on the CPU.", err=True)
        raise typer.Exit(gpucheck.NO_CUDA_EXIT)
    folder = out or RESULTS_DIR.parent / "gpu" / gpucheck.slug(name)
    summary = gpucheck.check(device, folder, budget, backend, tuple(set_ or ()), typer.echo)
    typer.echo(summary.markdown())
    typer.echo(f"gpu-check: everything is in {folder}/")
    raise typer.Exit(0 if summary.ok else 1)
