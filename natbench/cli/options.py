"""Options shared by the commands that run suites (run, verify, compare), and how they apply."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.errors import SuiteError

Suite = Annotated[str, typer.Option("--suite", "-s", help="Suite name (see `natbench list`) or path to a .toml file.")]
Backends = Annotated[Optional[str], typer.Option("--backend", "-b", help="Comma-separated backends; default: the suite's.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, or auto (CUDA when present, else CPU).")]
Dtype = Annotated[Optional[str], typer.Option(help="Override the dtype axis, e.g. float16 or float32,bfloat16.")]
Pass = Annotated[Optional[str], typer.Option("--pass", help="fwd, bwd or fwdbwd (comma-separated sweeps).")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="AXIS=v1,v2: override or sweep any axis; per-axis values as 56x48.")]
MaxTime = Annotated[Optional[float], typer.Option(help="Hard maximum seconds of sampling per case and backend, all rounds together.")]
Rounds = Annotated[Optional[int], typer.Option(min=1, help="Rounds per case, spread over the run (default 8; the suite may set its own); a row's median and CI come from its round medians.")]
CallTimeout = Annotated[Optional[float], typer.Option(help="Seconds a measuring worker may run past a pair's budget (one call, or a round's set-up) before it is killed and the round recorded as a timeout; default 120.")]
Threads = Annotated[Optional[str], typer.Option(help="torch's CPU threads while timing: a count, or auto for torch's default (one per physical core). Default 1 (the suite may set its own).")]
BackendModules = Annotated[Optional[list[str]], typer.Option("--backend-module", help="Load plugin backends from path/to/file.py or package.module[:Class] (repeatable); installed packages' natbench.backends entry points load by themselves. docs/plugins.md.")]
Show = Annotated[Optional[list[str]], typer.Option("--show", help="Tables to print: latency (the default), memory; repeatable.")]
Baseline = Annotated[Optional[str], typer.Option(help="The backend the others are compared with; default: the suite's declared baseline.")]
ShardOption = Annotated[Optional[str], typer.Option("--shard", help="I/N: measure the I-th of N parts of the suite (whole cases, balanced by expected cost; `natbench merge` joins the parts).")]
Costs = Annotated[Optional[Path], typer.Option(help="A results file whose measured times give each pair's expected cost, for --shard's split and --dry-run's estimates (default for --dry-run: the newest results of this suite on this kind of machine under results/runs/).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan (pairs, skips and why, expected costs, shards) and measure nothing.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes; results only.")]


def resolve_device(device: str) -> str:
    if device not in ("cpu", "cuda", "auto"):
        raise SuiteError(f"--device {device!r}: use cpu, cuda or auto.")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def policy(suite, device: str, max_time: float | None, rounds: int | None, threads_: str | None,
           call_timeout: float | None = None):
    """The suite's timing policy on `device` with the command line's --max-time, --rounds,
    --threads and --call-timeout."""
    for flag, value in (("--max-time", max_time), ("--call-timeout", call_timeout)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SuiteError(f"{flag} {value:g}: use a positive number of seconds, e.g. {flag} 2.")
    return suite.policy(device, max_time_s=max_time, rounds=rounds, threads=threads(threads_),
                        call_timeout_s=call_timeout)


def threads(value: str | None) -> int | str | None:
    """--threads as the policy takes it: None (the suite's), "auto", or a positive count."""
    if value is None or value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise SuiteError(f"--threads {value!r}: use a positive count, or auto for torch's default "
                         f"(one per physical core).")
    return int(value)


def threads_or_default(value: str | None) -> int | str:
    """--threads of a command without a suite (env, profile): the timing policy's default if not given."""
    from natbench.timing import TimingPolicy

    return threads(value) or TimingPolicy.threads


def load_plugins(modules: list[str] | None, warn=None) -> None:
    """Load the `--backend-module` plugins; `warn` hears of every plugin that did not load (entry
    points included), which leaves the other backends running."""
    from natbench import backends

    for spec in modules or []:
        backends.load_module(spec)
    for where, why in backends.plugin_problems() if warn else ():
        if (where, why) not in _WARNED:
            _WARNED.add((where, why))
            warn(f"plugin {where} did not load: {why}")


_WARNED: set = set()  # each plugin problem is said once a process


def plan(suite_name: str, backends: str | None, device: str, dtype: str | None,
         pass_: str | None, sets: list[str] | None, modules: list[str] | None = None, warn=None):
    """(suite with overrides, points, backend names, device) from the common options, with the
    `--backend-module` plugins loaded first (a suite may name them)."""
    from natbench import suite as suites
    from natbench.backends import get_backend

    load_plugins(modules, warn)
    suite = suites.load(suite_name)
    overrides = dict(suites.parse_set(option) for option in sets or [])
    device = resolve_device(device)
    overrides["device"] = [device]
    if dtype:
        overrides["dtype"] = [d.strip() for d in dtype.split(",")]
    if pass_:
        overrides["pass"] = [p.strip() for p in pass_.split(",")]
    suite = suite.with_overrides(overrides)
    names = [b.strip() for b in backends.split(",")] if backends else list(suite.backends)
    if not names:
        raise SuiteError(f"{suite.where()} names no backends; pass --backend a,b.")
    for name in names:
        get_backend(name)  # unknown names fail now, with a suggestion
    return suite, suite.expand(), names, device


# The options a run's plan holds (its header's `plan`), as `natbench run` names its parameters,
# and the flags a person types.
PLAN_FLAGS = {"suite": "--suite", "backend": "--backend", "device": "--device", "dtype": "--dtype",
              "pass_": "--pass", "set_": "--set", "max_time": "--max-time", "rounds": "--rounds",
              "threads": "--threads", "backend_module": "--backend-module",
              "call_timeout": "--call-timeout", "shard": "--shard", "costs": "--costs"}


def from_command_line(ctx, given: dict) -> set[str]:
    """The options of `given` that were typed on the command line (not left at their defaults).
    By the source's name: typer carries a click of its own, whose enum is not click's."""
    return {name for name in given if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


def _same(name: str, a, b) -> bool:
    if name == "backend":
        return [x.strip() for x in (a or "").split(",")] == [x.strip() for x in (b or "").split(",")]
    return (a or None) == (b or None)


def resumed_plan(out, given: dict, typed: set[str], force: bool) -> dict:
    """What a --resume of `out` runs: the plan recorded in its header, so that it measures what
    the interrupted run was asked to (continued_plan). A file from before plans were recorded
    resumes with the options as given."""
    from natbench import store

    plan = store.read_header(out).get("plan")
    return given if plan is None else continued_plan(plan, given, typed, str(out), force)


def continued_plan(plan: dict, given: dict, typed: set[str], where: str, force: bool | None) -> dict:
    """The options of `given` as `plan` (recorded in `where`) has them. An option typed now that
    differs from the plan is refused, naming it, unless `force` (then the typed value wins);
    `force` None: the command has no --force."""
    resumed = {name: plan.get(name) for name in given}
    for name in typed:
        if not _same(name, given[name], plan.get(name)):
            if not force:
                remedy = "leave the option out" + (", or pass --force to change it" if force is not None else "")
                raise SuiteError(f"{PLAN_FLAGS[name]} {given[name]!r}: {where} was recorded with "
                                 f"{PLAN_FLAGS[name]} {plan.get(name)!r}, and --resume continues that "
                                 f"plan; {remedy}.")
            resumed[name] = given[name]
    return resumed


def shown(show: list[str] | None) -> tuple:
    """--show's tables, checked: latency unless others are named."""
    tables = tuple(dict.fromkeys(show or ["latency"]))
    for name in tables:
        if name not in ("latency", "memory"):
            raise SuiteError(f"--show {name}: the tables are latency and memory.")
    return tables


def shard_of(text: str | None, costs: str | None, suite, points, names, device: str, policy) -> dict | None:
    """--shard I/N: the shard's points and the header's record of it (None without --shard). The
    split takes its costs from --costs alone, never from files that happen to be at hand, so
    that every job of a sweep computes the same one."""
    if text is None:
        return None
    from natbench import store
    from natbench.plan import Costs, make_plan, parse_shard

    shard = parse_shard(text)
    plan = make_plan(points, names, device, policy, Costs(store.load(costs) if costs else None))
    cases = plan.cases()
    if shard.count > len(cases):
        raise SuiteError(f"--shard {text}: {suite.name} has {len(cases)} cases and a shard holds whole "
                         f"cases; use at most {len(cases)} shards.")
    split = plan.shards(shard.count)
    keys = set(split[shard.index])
    costs_by_case = plan.case_costs()
    record = {"index": shard.index + 1, "count": shard.count, "cases": split[shard.index],
              "suite_cases": cases, "split_by": plan.costs_from,
              "expected_s": [sum(costs_by_case[k] for k in part) for part in split]}
    return {"points": [p for p in points if p.case.key in keys], "split": split, "record": record}


def show_plan(sink, suite, points, names, device: str, policy, given: dict, part: dict | None,
              out: Path | None, resume: bool) -> None:
    """--dry-run: what the run would do, measuring nothing: each pair (or why it would be
    skipped), its expected call and cost, the shard it falls in, and the expected total."""
    from natbench import store
    from natbench.console import plan_report
    from natbench.env import RESULTS_DIR
    from natbench.plan import Costs, costs_file, make_plan

    done = set()
    if resume and out is not None and out.exists():
        done = store.finished(store.load(out))
    costs = Costs(costs_file(Path(given["costs"]) if given.get("costs") else None, suite.name, device,
                             RESULTS_DIR))
    plan = make_plan(points, names, device, policy, costs, done)
    plan_report(sink, plan, suite.name, device, part)
