"""natbench export: a results file as CSV, Parquet or Markdown (through pandas), or as the JSON
that CI benchmark trackers read: github-action-benchmark's customSmallerIsBetter and Bencher's
Metric Format (BMF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from natbench.errors import ResultsError

FORMATS = ("csv", "parquet", "markdown", "github-action-benchmark", "bmf")


def _measured(rows: list[dict]) -> list[dict]:
    """Rows with a trustworthy latency: ran, and computed the right answer."""
    return [r for r in rows if r["status"] == "ok" and r.get("check") != "fail"]


def github_action_benchmark(rows: list[dict]) -> list[dict]:
    """customSmallerIsBetter entries: latency (ms, with its 95% CI) and peak memory per row."""
    entries = []
    for r in _measured(rows):
        name = f"{r['backend']} {r['case_key']}"
        half = (r["latency_ms_ci_high"] - r["latency_ms_ci_low"]) / 2
        entries.append({"name": name, "unit": "ms", "value": r["latency_ms_median"],
                        "range": f"± {half:.4g}",
                        "extra": f"95% CI [{r['latency_ms_ci_low']:.4g}, {r['latency_ms_ci_high']:.4g}] ms; "
                                 f"{r['samples']} samples; {r['tflops']:.3g} TFLOP/s"})
        if r.get("peak_memory_bytes") is not None:
            entries.append({"name": f"{name} peak memory", "unit": "bytes", "value": r["peak_memory_bytes"]})
    return entries


def bencher_metric_format(rows: list[dict]) -> dict:
    """BMF: per benchmark, latency in nanoseconds with its 95% CI as bounds, and peak memory."""
    out = {}
    for r in _measured(rows):
        metrics = {"latency": {"value": r["latency_ms_median"] * 1e6, "lower_value": r["latency_ms_ci_low"] * 1e6,
                               "upper_value": r["latency_ms_ci_high"] * 1e6}}
        if r.get("peak_memory_bytes") is not None:
            metrics["peak-memory-bytes"] = {"value": r["peak_memory_bytes"]}
        out[f"{r['backend']} {r['case_key']}"] = metrics
    return out


def export(results: Annotated[Path, typer.Argument(help="A results file (.jsonl).")],
           format_: Annotated[str, typer.Option("--format", "-f", help="csv, parquet, markdown, github-action-benchmark or bmf.")] = "csv",
           out: Annotated[Optional[Path], typer.Option(help="Output file; default: stdout (csv, markdown) or RESULTS.parquet.")] = None) -> None:
    """Export a results file's rows (raw samples as a JSON list column)."""
    import json

    import pandas as pd

    from natbench import store

    if format_ not in FORMATS:
        raise ResultsError(f"--format {format_!r}: use one of {', '.join(FORMATS)}.")
    rows = store.load(results).rows
    if format_ in ("github-action-benchmark", "bmf"):
        data = github_action_benchmark(rows) if format_ == "github-action-benchmark" else bencher_metric_format(rows)
        _emit(json.dumps(data, indent=1), out)
        return
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
    _emit(frame.to_csv(index=False) if format_ == "csv" else frame.to_markdown(index=False), out)


def _emit(text: str, out: Path | None) -> None:
    if out:
        out.write_text(text)
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text)
