"""natbench launch: a suite spread over jobs through submitit (SLURM or local processes), merged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options


def launch(ctx: typer.Context, suite: options.Suite = "kernel-sizes", backend: options.Backends = None,
           device: options.Device = "auto", dtype: options.Dtype = None, pass_: options.Pass = None,
           set_: options.Sets = None, max_time: options.MaxTime = None, rounds: options.Rounds = None,
           threads: options.Threads = None, call_timeout: options.CallTimeout = None,
           backend_module: options.BackendModules = None,
           shards: Annotated[int, typer.Option(min=1, help="How many jobs (one shard of whole cases each).")] = 2,
           executor: Annotated[str, typer.Option(help="slurm (sbatch through submitit) or local (processes of this machine).")] = "slurm",
           partition: Annotated[Optional[str], typer.Option(help="SLURM partition of the jobs.")] = None,
           gpus_per_job: Annotated[int, typer.Option(min=0, help="GPUs of each job (on one node); 0 for CPU sweeps.")] = 1,
           time_: Annotated[int, typer.Option("--time", min=1, help="Each job's time limit in minutes; a job that reaches it is requeued and resumes its shard.")] = 60,
           cpus_per_job: Annotated[Optional[int], typer.Option(min=1, help="CPUs of each job (SLURM --cpus-per-task).")] = None,
           slurm_arg: Annotated[Optional[list[str]], typer.Option("--slurm-arg", help="KEY=VALUE: any other sbatch option, e.g. account=proj or constraint=h100 (repeatable).")] = None,
           parallel: Annotated[Optional[int], typer.Option(min=1, help="local: jobs at a time (default: one per GPU, or on the CPU one per core's share of --threads).")] = None,
           costs: options.Costs = None,
           out: Annotated[Path, typer.Option(help="Folder of the sweep: shard files, job logs, launch.json and the merged results.")] = Path("results/launch"),
           resume: Annotated[bool, typer.Option(help="Submit again only the shards of --out whose files are incomplete.")] = False,
           dry_run: options.DryRun = False, json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Spread a suite over jobs, one shard each, show their progress and merge their results."""
    from natbench.console import Sink, launch_progress, plan_report
    from natbench.env import RESULTS_DIR
    from natbench.launch import INSTALL, STATE, Launch, Options, live_jobs, merge_shards, \
        parse_slurm_args, check_executor, run_command, sbatch_text, shard_file, watch
    from natbench.plan import Costs, costs_file, make_plan

    sink = Sink(json_, quiet)
    if executor not in ("slurm", "local"):
        from natbench.errors import SuiteError

        raise SuiteError(f"--executor {executor!r}: use slurm or local.")
    given = {"suite": suite, "backend": backend, "device": device, "dtype": dtype, "pass_": pass_,
             "set_": set_, "max_time": max_time, "rounds": rounds, "threads": threads,
             "backend_module": backend_module, "call_timeout": call_timeout,
             "costs": str(costs) if costs else None}
    state = Launch.load(out) if resume else None
    if state is not None:
        given = options.continued_plan(state.plan, given, options.from_command_line(ctx, given),
                                       str(out / STATE), force=None)
        shards = len(state.split)
        chosen = {"executor": executor, "partition": partition, "gpus_per_job": gpus_per_job, "time_": time_,
                  "cpus_per_job": cpus_per_job, "slurm_arg": slurm_arg, "parallel": parallel}
        typed = options.from_command_line(ctx, chosen)  # the job options typed now win
        executor, partition, gpus_per_job, time_, cpus_per_job, slurm_arg, parallel = (
            chosen[name] if name in typed or name not in state.options else state.options[name]
            for name in chosen)
    elif not dry_run and (out / STATE).exists():
        from natbench.errors import SuiteError

        raise SuiteError(f"{out} holds a launched sweep; pass --resume to continue it, or --out a new folder.")
    suite_obj, points, names, device_name = options.plan(given["suite"], given["backend"], given["device"],
                                                         given["dtype"], given["pass_"], given["set_"],
                                                         given["backend_module"], sink.warn)
    if device_name == "cpu" and given["device"] == "auto" and executor == "slurm" and gpus_per_job:
        sink.warn("--device auto is cpu here (torch sees no GPU on this machine), and the jobs measure "
                  "what the plan here says; pass --device cuda for a GPU sweep.")
    given["device"] = device_name  # every job measures the device the plan was made for
    if state is None and given["costs"] is None:
        # the newest results of this suite on this kind of machine balance the shards; every job
        # is handed that file, so all of them compute the same split
        found = costs_file(None, suite_obj.name, device_name, RESULTS_DIR)
        if found is not None:
            given["costs"] = str(found.path.resolve())
    run_policy = options.policy(suite_obj, device_name, given["max_time"], given["rounds"], given["threads"],
                                given["call_timeout"])
    cases = len({p.case.key for p in points})
    if shards > cases:
        from natbench.errors import SuiteError

        raise SuiteError(f"--shards {shards}: {suite_obj.name} has {cases} cases here and a shard holds whole "
                         f"cases; use at most {cases} shards.")
    part = options.shard_of(f"1/{shards}", given["costs"], suite_obj, points, names, device_name, run_policy)
    opts = Options(executor, shards, out, partition, gpus_per_job, time_, cpus_per_job,
                   parse_slurm_args(slurm_arg), parallel or _parallel(executor, device_name, given["threads"]))
    if dry_run:
        estimates = Costs(costs_file(Path(given["costs"]) if given["costs"] else None, suite_obj.name,
                                     device_name, RESULTS_DIR))
        commands = [run_command(given, i, shards, shard_file(out, i, shards)) for i in range(shards)]
        script = sbatch_text(opts, commands[0]) if executor == "slurm" else None
        plan_report(sink, make_plan(points, names, device_name, run_policy, estimates), suite_obj.name,
                    device_name, part, {"jobs": commands, "sbatch": script, "executor": executor,
                                        "parallel": opts.parallel})
        command = commands[0]
        sink.info(f"job 1 of {shards} runs: {' '.join(command)}")
        if executor == "slurm":
            sink.info("each job's sbatch script (submitit writes it; the job runs the line above through "
                      "submitit, which requeues it when it is pre-empted or out of time):\n"
                      + (script if script else f"(showing it needs submitit: {INSTALL})"))
        else:
            sink.info(f"local: {opts.parallel} jobs at a time.")
        raise typer.Exit(0)
    check_executor(opts)  # submitit installed, sbatch reachable: said before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = Launch(out, given, {"executor": executor, "partition": partition, "gpus_per_job": gpus_per_job,
                                    "time_": time_, "cpus_per_job": cpus_per_job, "slurm_arg": slurm_arg,
                                    "parallel": parallel}, part["split"], names)
        state.save()
    todo = [i for i in range(shards) if not state.complete(i)]
    if not todo:
        sink.info(f"every shard in {out} is complete.")
    following = live_jobs(state, opts, todo)
    try:
        with launch_progress(sink, f"{suite_obj.name}: {shards} shards") as progress:
            failed = watch(state, opts, todo, progress, sink, following)
    except KeyboardInterrupt:
        sink.info(f"stopped following the jobs ({'they go on' if executor == 'slurm' else 'finished rounds are on disk'}); "
                  f"natbench launch --out {out} --resume continues.")
        raise typer.Exit(130) from None
    for line in failed:
        sink.warn(line)
    if failed:
        sink.info(f"the finished shards are in {out}; natbench launch --out {out} --resume submits the rest again.")
        raise typer.Exit(1)
    merged = merge_shards(state, out / f"{suite_obj.name}-{device_name}.jsonl")
    sink.info(f"results: {merged}")


def _parallel(executor: str, device: str, threads: str | None) -> int | None:
    """Local jobs at a time: one per GPU on CUDA; on the CPU as many as the cores hold jobs of
    --threads threads (one each by default); None (all at once) on SLURM."""
    if executor != "local":
        return None
    if device == "cuda":
        from natbench.launch import visible_gpus

        return max(1, visible_gpus())
    import os

    per_job = int(threads) if threads and threads.isdigit() else (os.cpu_count() or 1) if threads == "auto" else 1
    return max(1, (os.cpu_count() or 1) // per_job)
