"""natbench compare: backends on one suite (run now, interleaved), or two results files."""

from __future__ import annotations

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
            json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Compare B, C, ... against A case by case: ratio with its CI, memory, TFLOP/s, verdict."""
    from natbench import store
    from natbench.compare import agreement, compare_backends, compare_runs, machine_shift
    from natbench.console import Sink, agreement_text, comparison_markdown, comparison_table, summary_text

    sink = Sink(json_, quiet)
    agreed = None  # two results files: how their rows agree
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
        comparisons = compare_runs(a.rows, b.rows, a_name, b_name)
        agreed = agreement(comparisons)
        shift = machine_shift(comparisons)
        if shift:
            moved, compared, low, high = shift
            sink.warn(f"{moved} of {compared} backends moved, all the same way ({low:.3f}x to "
                      f"{high:.3f}x; the others within their CI): likely a shift of the whole "
                      f"machine between the runs, not the code. `natbench gate` divides such a "
                      f"drift out.")
    else:
        if len(targets) < 2:
            raise SuiteError(f"compare needs at least two backends (baseline first), got {targets}; "
                             f"e.g. `natbench compare natten swin`.")
        from natbench.env import RESULTS_DIR
        from natbench.session import execute

        suite_obj, points, names, device_name = options.plan(suite, ",".join(targets), device, dtype,
                                                             pass_, set_)
        path = out or RESULTS_DIR / (f"compare-{'-'.join(names)}-{suite_obj.name}-{device_name}-"
                                     f"{datetime.now():%Y%m%d-%H%M%S}.jsonl")
        rows = execute(suite_obj, points, names, device_name, path, False,
                       options.policy(suite_obj, device_name, max_time, rounds, threads),
                       Sink(False, quiet or json_), show_table=False)
        comparisons = compare_backends(rows, names[0], names[1:])
    if json_:
        sink.json({"comparisons": [c.to_record() for c in comparisons],
                   **({"agreement": agreed.to_record()} if agreed else {})})
    elif markdown:
        typer.echo("\n".join(comparison_markdown(c) for c in comparisons))
    else:
        for comparison in comparisons:
            sink.table(comparison_table(comparison))
            typer.echo(summary_text(comparison))
    if agreed and not json_:
        typer.echo(f"\n{agreement_text(agreed)}")
