"""natbench profile: one case under torch.profiler, with traces and a per-op breakdown."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options


def profile(backend: Annotated[str, typer.Option("--backend", "-b", help="The backend to profile.")],
            set_: options.Sets = None, device: options.Device = "auto", dtype: options.Dtype = None,
            pass_: Annotated[str, typer.Option("--pass", help="fwd, bwd or fwdbwd.")] = "fwd",
            steps: Annotated[int, typer.Option(min=1, help="Active (recorded) steps, after 1 skipped and 2 warm-up steps.")] = 5,
            top: Annotated[int, typer.Option(min=1, help="Rows of the breakdown table.")] = 15,
            out: Annotated[Optional[Path], typer.Option(help="Output directory; default results/profiles/<backend>-<time>/.")] = None,
            threads: options.Threads = None, backend_module: options.BackendModules = None,
            json_: options.Json = False) -> None:
    """Profile one case (default: 56x56, K=7, 4 heads of 32, fp32; change it with --set)."""
    from natbench.console import Sink, profile_reconciliation, profile_table
    from natbench.env import RESULTS_DIR, cpu_threads
    from natbench.errors import SuiteError
    from natbench.profiling import profile_case
    from natbench.suite import Suite, parse_set

    options.load_plugins(backend_module, Sink(json_).warn)
    overrides = dict(parse_set(option) for option in set_ or [])
    swept = [axis for axis, values in overrides.items() if len(values) > 1]
    if swept:
        raise SuiteError(f"profile takes one case: --set {swept[0]} has several values; give one.")
    overrides["device"] = [options.resolve_device(device)]
    overrides["pass"] = [pass_]
    if dtype:
        overrides["dtype"] = [dtype]
    [point] = Suite("profile", None).with_overrides(overrides).expand()
    directory = out or RESULTS_DIR.parent / "profiles" / f"{backend}-{datetime.now():%Y%m%d-%H%M%S}"
    with cpu_threads(options.threads_or_default(threads)):
        breakdown = profile_case(point.case, backend, steps, directory)
    sink = Sink(json_)
    if json_:
        sink.json(breakdown.to_record())
        return
    sink.table(profile_table(breakdown, top))
    typer.echo(profile_reconciliation(breakdown))
    typer.echo(f"TensorBoard: tensorboard --logdir {breakdown.files['tensorboard']} (needs the tb extra); "
               f"Perfetto / chrome://tracing: {breakdown.files['trace']}")
    if "gpu_samples" in breakdown.files:
        typer.echo(f"GPU clocks, power and temperature during the active steps: {breakdown.files['gpu_samples']}")
