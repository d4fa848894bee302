"""natbench plot: figures (PNG and SVG) of one or more results files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def plot(results: Annotated[list[Path], typer.Argument(help="Results files (.jsonl); several overlay, one line style per file.")],
         x: Annotated[Optional[str], typer.Option(help="Case axis on x: kernel_size, resolution, dtype, ...; default: the first that varies.")] = None,
         y: Annotated[str, typer.Option(help="latency, memory, tflops, pct_of_peak, or ratio (time over the baseline's).")] = "latency",
         ratio: Annotated[bool, typer.Option(help="With --y latency or memory, also its ratio to the baseline.")] = True,
         baseline: Annotated[Optional[str], typer.Option(help="The backend ratios are taken to; default: each run's suite's baseline.")] = None,
         roofline: Annotated[bool, typer.Option(help="Also draw the roofline of each device and dtype.")] = True,
         out: Annotated[Optional[Path], typer.Option(help="Directory for the figures; default results/plots/<first file's name>/.")] = None) -> None:
    """Plot a metric against a case axis: a line per backend (its own colour in every figure) with
    its 95% CI band, and beside the latency each backend's time ratio to the baseline."""
    from natbench import store
    from natbench.compare import run_baselines
    from natbench.env import RESULTS_DIR
    from natbench.plot import (default_x, metric_figures, ratio_figures, roofline_figures, tagged_rows,
                               throughput_figures)

    loaded = [store.load(path) for path in results]
    rows, calibrations = tagged_rows(loaded)
    stem = results[0].stem
    directory = out or RESULTS_DIR.parent / "plots" / stem
    x = x or default_x(rows)
    baselines = {source: name for source, (name, _) in run_baselines(loaded, baseline).items()}
    paths = [] if y == "ratio" else metric_figures(rows, x, y, directory, stem)
    if y == "ratio" or (y in ("latency", "memory") and ratio):
        paths += ratio_figures(rows, baselines, x, directory, stem, metric="memory" if y == "memory" else "latency")
    if roofline:
        paths += roofline_figures(rows, calibrations, directory, stem)
    paths += throughput_figures(rows, directory, stem)
    for path in paths:
        typer.echo(str(path))
    if not paths:
        from natbench.errors import ResultsError

        raise ResultsError(f"nothing to plot: no row of {', '.join(map(str, results))} ran with a "
                           f"correct answer.")
