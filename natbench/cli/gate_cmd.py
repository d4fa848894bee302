"""natbench gate (a run against a committed baseline) and natbench baseline update."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options
from natbench.errors import CheckFailedError, ResultsError, SuiteError

# Header keys that may differ with --normalize: another machine of the same kind.
_MACHINE_KEYS = ("cpu_model", "gpu_name", "torch_threads")

Thresholds = Annotated[Optional[list[str]], typer.Option("--threshold", help="METRIC=FRACTION for latency, memory or flops (default 0.1, 0.02, 0; a suite's [gate] table overrides the defaults).")]


def _run(suite: str, backend, device, dtype, pass_, set_, max_time, rounds, threads, out: Path,
         quiet: bool, modules=None):
    from natbench.console import RunWatch, Sink
    from natbench.session import execute

    suite_obj, points, names, device_name = options.plan(suite, backend, device, dtype, pass_, set_,
                                                         modules, Sink(False, quiet).warn)
    execute(suite_obj, points, names, device_name, out, False,
            options.policy(suite_obj, device_name, max_time, rounds, threads), RunWatch(Sink(False, quiet)))
    return suite_obj


def _thresholds(suite_name: str | None, option_values):
    from natbench import suite as suites
    from natbench.gate import Thresholds as Values

    base = Values()
    if suite_name:
        try:
            base = Values(**{**base.__dict__, **suites.load(suite_name).gate})
        except SuiteError:  # a baseline recorded from a suite file this checkout lacks
            pass
    return Values.parse(option_values, base)


def _check_setups(baseline, current, normalize: bool, force: bool) -> None:
    from natbench import store

    differ = store.mismatches(baseline.header, current.header)
    if normalize:
        differ = [d for d in differ if d.split(":")[0] not in _MACHINE_KEYS]
    if differ and not force:
        hint = "" if normalize else " (--normalize accepts another machine of the same kind)"
        raise ResultsError(f"{current.path} and the baseline {baseline.path} come from different "
                           f"setups: {'; '.join(differ)}{hint}; pass --force to gate anyway.")


def _kind_key(device: str) -> str:
    """The header key that names a machine's kind for runs on `device`."""
    return "gpu_name" if device == "cuda" else "cpu_model"


def _this_machine(device: str) -> str | None:
    """This machine's kind, as a header's `_kind_key(device)` names it."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    from natbench.env import cpu_model

    return cpu_model()


def _pick_baseline(directory: Path, suite: str | None, device: str, key: str,
                   value: str | None) -> Path | None:
    """The baseline in `directory` recorded for `suite` on `device` of the kind header[key] == value."""
    from natbench import store

    for path in sorted(directory.glob("*.jsonl")):
        header = store.load(path).header
        same_suite = suite is None or header.get("suite") == Path(suite).stem
        if same_suite and header.get("env", {}).get("device_kind") == device and \
                header.get("env", {}).get(key) == value:
            return path
    return None


def gate(baseline: Annotated[Path, typer.Option(help="The committed baseline results file, or a directory of them: the one recorded on this kind of machine (CPU model, or GPU name) for the suite is used.")],
         current: Annotated[Optional[Path], typer.Option(help="A current results file; or give --suite to run one now.")] = None,
         suite: Annotated[Optional[str], typer.Option("--suite", "-s", help="Run this suite now as the current run.")] = None,
         backend: options.Backends = None, device: options.Device = "auto", dtype: options.Dtype = None,
         pass_: options.Pass = None, set_: options.Sets = None, max_time: options.MaxTime = None,
         rounds: options.Rounds = None, threads: options.Threads = None,
         threshold: Thresholds = None,
         normalize: Annotated[bool, typer.Option(help="Divide latencies by each run's matmul calibration: gate another machine of the same kind.")] = False,
         correct_drift: Annotated[bool, typer.Option(help="Divide current latencies by the run's median current/baseline ratio (a whole-machine slowdown cancels).")] = True,
         force: Annotated[bool, typer.Option(help="Gate runs from different setups.")] = False,
         out: Annotated[Optional[Path], typer.Option(help="Results file of the run made by --suite.")] = None,
         no_baseline_ok: Annotated[bool, typer.Option(help="With a --baseline directory that holds none for this machine: say so and exit 0 instead of 2 (CI on a new kind of machine).")] = False,
         confirm: Annotated[int, typer.Option(min=0, help="With --suite: when latency regresses, run the suite this many times more (OUT-confirmN.jsonl) and gate each alike; a regression fails only if every one finds it too. Fewer false alarms, less power: see docs/gate.md.")] = 0,
         backend_module: options.BackendModules = None,
         json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Fail (exit 1) on a significant slowdown, more memory, other FLOPs, a wrong answer or a lost row."""
    from natbench import store
    from natbench.console import Sink, gate_markdown, gate_table, gate_verdict
    from natbench.env import GITHUB_STEP_SUMMARY, RESULTS_DIR
    from natbench.gate import confirm as confirm_regressions
    from natbench.gate import gate as run_gate

    if (current is None) == (suite is None):
        raise SuiteError("natbench gate needs exactly one of --current FILE or --suite NAME.")
    sink = Sink(json_, quiet)
    if baseline.is_dir():
        # The kind of machine: this one for a run made now, the current file's otherwise.
        if suite:
            suite_name, device_name = suite, options.resolve_device(device)
            key = _kind_key(device_name)
            value = _this_machine(device_name)
        else:
            header = store.load(current).header
            suite_name, device_name = header.get("suite"), header.get("env", {}).get("device_kind", "cpu")
            key = _kind_key(device_name)
            value = header.get("env", {}).get(key)
        picked = _pick_baseline(baseline, suite_name, device_name, key, value)
        if picked is None:
            message = (f"no baseline in {baseline} was recorded on this kind of machine ({key} "
                       f"{value!r}, {device_name}) for suite {suite_name!r}; record one with "
                       f"`natbench baseline update --suite {suite_name} --device {device_name} "
                       f"--out {baseline}/NAME.jsonl`")
            if no_baseline_ok:
                if json_:
                    sink.json({"applied": False, "passed": True, "reason": message})
                else:
                    typer.echo(f"natbench gate: not applied: {message}.")
                return
            raise ResultsError(message + ".")
        sink.info(f"natbench gate: baseline for this machine: {picked}")
        baseline = picked
    base = store.load(baseline)
    if suite is not None:
        current = out or RESULTS_DIR / f"gate-{Path(suite).stem}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
        _run(suite, backend, device, dtype, pass_, set_, max_time, rounds, threads, current, quiet or json_,
             backend_module)
    cur = store.load(current)
    _check_setups(base, cur, normalize, force)
    limits = _thresholds(suite or base.header.get("suite_file") or base.header.get("suite"), threshold)
    result = run_gate(base, cur, limits, normalize, correct_drift)
    flagged = [f for f in result.regressions if f.metric == "latency"]
    if suite is not None and flagged and confirm:
        reruns = []
        for index in range(confirm):
            again = current.with_name(f"{current.stem}-confirm{index + 1}.jsonl")
            sink.info(f"natbench gate: {len(flagged)} latency regressions; running the suite "
                      f"again to confirm them ({index + 1} of {confirm}) -> {again}")
            _run(suite, backend, device, dtype, pass_, set_, max_time, rounds, threads, again, True,
                 backend_module)
            reruns.append(run_gate(base, store.load(again), limits, normalize, correct_drift))
        confirm_regressions(result, reruns)
    if json_:
        sink.json({"applied": True, **result.to_record()})
    else:
        sink.table(gate_table(result))
        typer.echo(gate_verdict(result))
    if GITHUB_STEP_SUMMARY:
        with open(GITHUB_STEP_SUMMARY, "a") as summary:
            summary.write(gate_markdown(result))
    if result.regressions:
        first = result.regressions[0]
        raise CheckFailedError(f"{len(result.regressions)} regressions against {baseline}; first: "
                               f"{first.backend} on {first.case_key}, {first.metric}: {first.message}.")


baseline_app = typer.Typer(help="Record the baselines natbench gate compares against.", no_args_is_help=True)


@baseline_app.command("update")
def update(suite: options.Suite = "smoke",
           out: Annotated[Path, typer.Option(help="The baseline file to (over)write, e.g. results/baselines/smoke-cpu.jsonl.")] = Path("results/baselines/baseline.jsonl"),
           repeats: Annotated[int, typer.Option(min=1, help="Whole runs of the suite merged into the baseline: their spread is its noise.")] = 3,
           backend: options.Backends = None, device: options.Device = "auto", dtype: options.Dtype = None,
           pass_: options.Pass = None, set_: options.Sets = None, max_time: options.MaxTime = None,
           rounds: options.Rounds = None, threads: options.Threads = None,
           backend_module: options.BackendModules = None, quiet: options.Quiet = False) -> None:
    """Run a suite several times and merge the runs into one baseline file."""
    from natbench import store
    from natbench.console import Sink
    from natbench.gate import merge_repeats, repeat_spread

    sink = Sink(False, quiet)
    with tempfile.TemporaryDirectory() as directory:
        runs = []
        for index in range(repeats):
            sink.info(f"baseline repeat {index + 1} of {repeats}")
            path = Path(directory) / f"repeat-{index}.jsonl"
            _run(suite, backend, device, dtype, pass_, set_, max_time, rounds, threads, path, quiet,
                 backend_module)
            runs.append(store.load(path))
        header, calibrations, rows = merge_repeats(runs)
    header["baseline"]["files"] = [f"repeat {i + 1}" for i in range(repeats)]
    if out.exists():
        out.unlink()
    writer = store.ResultsWriter(out, header)
    for record in [*calibrations, *rows]:
        writer.write(record)
    writer.close()
    spreads = [repeat_spread(r) for r in rows if len(r.get("repeat_medians_ms") or []) > 1]
    typer.echo(f"wrote {out}: {len(rows)} rows from {repeats} runs"
               + (f"; spread of medians between runs, each run's drift divided out (the rows' noise "
                  f"floors): median {sorted(spreads)[len(spreads) // 2]:.1%}, max {max(spreads):.1%}"
                  if spreads else ""))
