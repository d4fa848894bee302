"""natbench run: sweep a suite across backends and record every measurement."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options


def run(suite: options.Suite = "kernel-sizes", backend: options.Backends = None,
        device: options.Device = "auto", dtype: options.Dtype = None,
        pass_: options.Pass = None, set_: options.Sets = None,
        out: Annotated[Optional[Path], typer.Option(help="Results file (JSON Lines); default under results/runs/.")] = None,
        resume: Annotated[bool, typer.Option(help="Continue --out, skipping rows already in it.")] = False,
        max_time: options.MaxTime = None, rounds: options.Rounds = None,
        threads: options.Threads = None, json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Run a suite: latency, memory, FLOPs and correctness per case and backend."""
    from natbench.console import RunWatch, Sink, run_report
    from natbench.env import RESULTS_DIR
    from natbench.session import execute

    sink = Sink(json_, quiet)
    suite_obj, points, names, device_name = options.plan(suite, backend, device, dtype, pass_, set_)
    if resume and out is None:
        from natbench.errors import SuiteError

        raise SuiteError("--resume needs --out FILE: the results file to continue.")
    path = out or RESULTS_DIR / f"{suite_obj.name}-{device_name}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
    results = execute(suite_obj, points, names, device_name, path, resume,
                      options.policy(suite_obj, device_name, max_time, rounds, threads), RunWatch(sink))
    run_report(results, names, f"{suite_obj.name} on {device_name}: median latency ±95% CI "
               f"half-width, peak extra memory", sink)
    sink.info(f"results: {path}")
    raise typer.Exit(0 if results else 1)
