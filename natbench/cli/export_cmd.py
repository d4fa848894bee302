"""natbench export: a results file as CSV, Parquet or Markdown, through pandas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.errors import ResultsError

FORMATS = ("csv", "parquet", "markdown")


def export(results: Annotated[Path, typer.Argument(help="A results file (.jsonl).")],
           format_: Annotated[str, typer.Option("--format", "-f", help="csv, parquet or markdown.")] = "csv",
           out: Annotated[Optional[Path], typer.Option(help="Output file; default: stdout (csv, markdown) or RESULTS.parquet.")] = None) -> None:
    """Export a results file's rows (raw samples as a JSON list column)."""
    import json

    import pandas as pd

    from natbench import store

    if format_ not in FORMATS:
        raise ResultsError(f"--format {format_!r}: use one of {', '.join(FORMATS)}.")
    rows = store.load(results).rows
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, list)).any():
            frame[column] = frame[column].map(json.dumps)
    if format_ == "parquet":
        target = out or results.with_suffix(".parquet")
        try:
            frame.to_parquet(target, index=False)
        except ImportError as error:
            raise ResultsError(f"Parquet needs pyarrow ({error}); pip install pyarrow.") from None
        typer.echo(f"wrote {target}", err=True)
        return
    text = frame.to_csv(index=False) if format_ == "csv" else frame.to_markdown(index=False)
    if out:
        out.write_text(text)
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text)
