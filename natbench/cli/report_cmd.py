"""natbench report: a self-contained HTML report of one or more results files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(results: Annotated[list[Path], typer.Argument(help="Results files (.jsonl); with two, also the second against the first.")],
           out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
           baseline: Annotated[Optional[str], typer.Option(help="Backend every other is compared with; default: each run's first.")] = None) -> None:
    """Environment, results, comparisons and plots in one HTML file that opens without a network."""
    from natbench import store
    from natbench.report import build_report

    text = build_report([store.load(path) for path in results], baseline)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out} ({len(text) / 1024:.0f} KiB)")
