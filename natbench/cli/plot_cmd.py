"""natbench plot: figures (PNG and SVG) of one or more results files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def plot(results: Annotated[list[Path], typer.Argument(help="Results files (.jsonl); several overlay as separate lines.")],
         x: Annotated[Optional[str], typer.Option(help="Case axis on x: kernel_size, resolution, dtype, ...; default: the first that varies.")] = None,
         y: Annotated[str, typer.Option(help="latency, memory, tflops or pct_of_peak.")] = "latency",
         roofline: Annotated[bool, typer.Option(help="Also draw the roofline of each device and dtype.")] = True,
         out: Annotated[Optional[Path], typer.Option(help="Directory for the figures; default results/plots/<first file's name>/.")] = None) -> None:
    """Plot a metric against a case axis, one line per backend with its 95% CI band."""
    from natbench import store
    from natbench.env import RESULTS_DIR
    from natbench.plot import default_x, metric_figures, roofline_figures, tagged_rows

    loaded = [store.load(path) for path in results]
    rows, calibrations = tagged_rows(loaded)
    stem = results[0].stem
    directory = out or RESULTS_DIR.parent / "plots" / stem
    paths = metric_figures(rows, x or default_x(rows), y, directory, stem)
    if roofline:
        paths += roofline_figures(rows, calibrations, directory, stem)
    for path in paths:
        typer.echo(str(path))
    if not paths:
        from natbench.errors import ResultsError

        raise ResultsError(f"nothing to plot: no row of {', '.join(map(str, results))} ran with a "
                           f"correct answer.")
