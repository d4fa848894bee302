"""natbench compare: backends on one suite (run now, interleaved), or two results files."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.cli import options
from natbench.errors import ResultsError, SuiteError


def compare(targets: Annotated[list[str], typer.Argument(help="Backends (the first is the baseline: `natten swin`), or two results files (`a.jsonl b.jsonl`).")],
            suite: options.Suite = "swin-match", device: options.Device = "auto",
            dtype: options.Dtype = None, pass_: options.Pass = None, set_: options.Sets = None,
            out: Annotated[Optional[Path], typer.Option(help="Results file of the run; default under results/runs/.")] = None,
            max_time: options.MaxTime = None, rounds: options.Rounds = None,
            threads: options.Threads = None,
            force: Annotated[bool, typer.Option(help="Compare results files recorded on different setups.")] = False,
            markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown tables, for a pull request.")] = False,
            correct_drift: Annotated[bool, typer.Option(help="Two results files: divide each backend's second-run latencies by the drift of the other backends, bounded by the calibration (docs/methodology.md).")] = True,
            backend_module: options.BackendModules = None,
            json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Compare B, C, ... against A case by case: ratio with its CI, memory, TFLOP/s, verdict."""
    from natbench import store
    from natbench.compare import calls_by_chance, compare_backends, compare_runs
    from natbench.console import RunWatch, Sink, chance_text, comparison_markdown, comparison_table, summary_text

    sink = Sink(json_, quiet)
    calls = None  # two results files: how many rows were called against chance
    files = [t for t in targets if t.endswith(".jsonl") or Path(t).is_file()]
    if files and len(files) != len(targets):
        raise SuiteError(f"compare takes backends or results files, not both: got {targets}.")
    if files:
        if len(files) != 2:
            raise ResultsError(f"compare takes two results files (baseline, then candidate); got {len(files)}.")
        a, b = (store.load(f) for f in files)
        differ = store.mismatches(a.header, b.header)
        if differ and not force:
            raise ResultsError(f"{a.path} and {b.path} were recorded on different setups "
                               f"({'; '.join(differ)}); pass --force to compare them anyway.")
        for line in differ:
            sink.warn(f"setups differ ({line}): ratios mix the machines with the code.")
        a_name, b_name = (a.path.name, b.path.name) if a.path.name != b.path.name else (str(a.path), str(b.path))
        comparisons = compare_runs(a, b, a_name, b_name, correct_drift)
        calls = calls_by_chance(comparisons)
    else:
        if len(targets) < 2:
            raise SuiteError(f"compare needs at least two backends (baseline first), got {targets}; "
                             f"e.g. `natbench compare natten swin`.")
        from natbench.env import RESULTS_DIR
        from natbench.session import execute

        suite_obj, points, names, device_name = options.plan(suite, ",".join(targets), device, dtype,
                                                             pass_, set_, backend_module, sink.warn)
        path = out or RESULTS_DIR / (f"compare-{'-'.join(names)}-{suite_obj.name}-{device_name}-"
                                     f"{datetime.now():%Y%m%d-%H%M%S}.jsonl")
        rows = execute(suite_obj, points, names, device_name, path, False,
                       options.policy(suite_obj, device_name, max_time, rounds, threads),
                       RunWatch(Sink(False, quiet or json_)))
        comparisons = compare_backends(rows, names[0], names[1:])
    if json_:
        sink.json({"comparisons": [c.to_record() for c in comparisons],
                   **({"chance_calls": asdict(calls) | {"too_many": calls.too_many}} if calls else {})})
    elif markdown:
        typer.echo("\n".join(comparison_markdown(c) for c in comparisons))
    else:
        for comparison in comparisons:
            sink.table(comparison_table(comparison))
            typer.echo(summary_text(comparison))
    if calls and not json_:
        typer.echo(f"\n{chance_text(calls)}")
