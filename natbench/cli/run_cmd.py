"""natbench run: sweep a suite across backends and record every measurement."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options


def run(ctx: typer.Context, suite: options.Suite = "kernel-sizes", backend: options.Backends = None,
        device: options.Device = "auto", dtype: options.Dtype = None,
        pass_: options.Pass = None, set_: options.Sets = None,
        out: Annotated[Optional[Path], typer.Option(help="Results file (JSON Lines); default under results/runs/.")] = None,
        resume: Annotated[bool, typer.Option(help="Continue --out with the plan it was recorded with (suite, backends, options), measuring only what is missing.")] = False,
        force: Annotated[bool, typer.Option(help="With --resume: accept options that differ from the file's recorded plan.")] = False,
        retry_crashed: Annotated[bool, typer.Option(help="With --resume: measure again the pairs whose worker crashed.")] = False,
        max_time: options.MaxTime = None, rounds: options.Rounds = None,
        threads: options.Threads = None, call_timeout: options.CallTimeout = None,
        backend_module: options.BackendModules = None, show: options.Show = None,
        baseline: options.Baseline = None, shard: options.ShardOption = None,
        costs: options.Costs = None, dry_run: options.DryRun = False,
        json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Run a suite: latency, memory, FLOPs and correctness per case and backend."""
    from natbench.console import RunWatch, Sink, run_report
    from natbench.env import RESULTS_DIR
    from natbench.session import execute

    sink = Sink(json_, quiet)
    given = {"suite": suite, "backend": backend, "device": device, "dtype": dtype, "pass_": pass_,
             "set_": set_, "max_time": max_time, "rounds": rounds, "threads": threads,
             "backend_module": backend_module, "call_timeout": call_timeout, "shard": shard,
             "costs": str(costs) if costs else None}
    if resume:
        if out is None:
            from natbench.errors import SuiteError

            raise SuiteError("--resume needs --out FILE: the results file to continue.")
        given = options.resumed_plan(out, given, options.from_command_line(ctx, given), force)
    suite_obj, points, names, device_name = options.plan(given["suite"], given["backend"], given["device"],
                                                         given["dtype"], given["pass_"], given["set_"],
                                                         given["backend_module"], sink.warn)
    run_policy = options.policy(suite_obj, device_name, given["max_time"], given["rounds"], given["threads"],
                                given["call_timeout"])
    part = options.shard_of(given["shard"], given["costs"], suite_obj, points, names, device_name, run_policy)
    if dry_run:
        options.show_plan(sink, suite_obj, points, names, device_name, run_policy, given, part, out, resume)
        raise typer.Exit(0)
    if part is not None:
        points = part["points"]
    tables = options.shown(show)
    if baseline is not None and baseline not in names:
        from natbench.errors import SuiteError

        raise SuiteError(f"--baseline {baseline}: not among the backends of this run ({', '.join(names)}).")
    path = out or RESULTS_DIR / f"{suite_obj.name}-{device_name}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
    results = execute(suite_obj, points, names, device_name, path, resume, run_policy, RunWatch(sink),
                      plan=given, retry_crashed=retry_crashed, shard=part and part["record"])
    if results:
        from natbench.compare import pick_baseline

        ran = list(dict.fromkeys(r["backend"] for r in results))
        base, _ = pick_baseline(ran, suite_obj.baseline, baseline if baseline in ran else None)
        run_report(results, names, f"{suite_obj.name} on {device_name}", sink, base, tables)
    sink.info(f"results: {path}")
    raise typer.Exit(0 if results else 1)
