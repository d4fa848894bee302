"""natbench report: one self-contained HTML file (inline CSS and SVG figures, no network) with
each run's environment header and calibration, its results, the comparisons and the plots."""

from __future__ import annotations

import html
import json
import tempfile
from datetime import datetime
from pathlib import Path

from natbench.compare import Comparison, calls_by_chance, compare_backends, compare_runs
from natbench.console import (case_columns, case_name, chance_text, comparison_cells, latency_text,
                              summary_text, verdict_text)
from natbench.plot import METRICS, default_x, metric_figures, roofline_figures, tagged_rows

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1d1d1f; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.55rem; text-align: right; vertical-align: top; }
th { background: #f2f4f7; } td.text, th.text { text-align: left; }
.faster { color: #087f23; font-weight: 600; } .slower { color: #b3261e; font-weight: 600; }
.unknown { color: #8a6d00; } .same { color: #666; }
.summary { background: #f7f9fc; border-left: 4px solid #4a78c2; padding: 0.5rem 0.8rem; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
details { margin: 0.4rem 0; } code { font-size: 0.85rem; }
"""
_VERDICT_CLASS = {"faster": "faster", "slower": "slower", "no significant difference": "same",
                  "unknown": "unknown"}


def _e(value) -> str:
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[str]], text_columns: int = 0) -> str:
    """An HTML table of already-escaped cells; the first `text_columns` align left."""
    def cells(values, tag):
        return "".join(f'<{tag}{" class=text" if i < text_columns else ""}>{v}</{tag}>'
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><tr>{cells(head, 'th')}</tr>{body}</table>"


def _header_section(results) -> str:
    header = results.header
    env = dict(header.get("env", {}))
    facts = {"suite": header.get("suite"), "command": header.get("command"),
             "started": header.get("started_at"), **env}
    rows = [[_e(k), f"<code>{_e(json.dumps(v) if isinstance(v, (list, dict)) else v)}</code>"]
            for k, v in facts.items() if v not in (None, "", [], {})]
    out = [f"<h2>Run: {_e(results.path.name)}</h2>", "<h3>Environment</h3>", _table(["key", "value"], rows, 2)]
    if results.calibrations:
        out.append("<h3>Calibration (this run's attainable rates)</h3>")
        out.append(_table(["device", "dtype", "matmul TFLOP/s", "copy GB/s"],
                          [[_e(c["device"]), _e(c["dtype"]), f"{c['matmul_flops_per_s'] / 1e12:.3g}",
                            f"{c['bandwidth_bytes_per_s'] / 1e9:.3g}"] for c in results.calibrations], 2))
    return "\n".join(out)


def _results_section(results) -> str:
    backends = list(dict.fromkeys(r["backend"] for r in results.rows))
    by_case: dict[str, dict[str, dict]] = {}
    for row in results.rows:
        by_case.setdefault(row["case_key"], {})[row["backend"]] = row
    body = []
    for cells in by_case.values():
        first = next(iter(cells.values()))
        values = [_e(case_name(first, case_columns(results.rows)))]
        for backend in backends:
            row = cells.get(backend)
            if row is None:
                values.append("-")
            elif row["status"] != "ok":
                values.append(f'<span class=unknown title="{_e(row.get("reason"))}">{_e(row["status"])}</span>')
            elif row.get("check") == "fail":
                values.append(f'<span class=slower>WRONG</span> {_e(latency_text(row))}')
            else:
                values.append(_e(latency_text(row)))
        body.append(values)
    return ("<h3>Results: median latency and its 95% CI</h3>"
            + _table(["case", *map(_e, backends)], body, 1))


def _comparison_section(comparison: Comparison) -> str:
    columns = case_columns([p.any_row for p in comparison.pairs])
    body = []
    for pair in comparison.pairs:
        body.append([_e(case_name(pair.any_row, columns)), *map(_e, comparison_cells(pair)),
                     f'<span class={_VERDICT_CLASS[pair.verdict]}>{_e(verdict_text(pair))}</span>'])
    a, b = _e(comparison.a_label), _e(comparison.b_label)
    table = _table(["case", f"A: {a}", f"B: {b}", "B/A [95% CI]", "memory B/A", "TFLOP/s A",
                    "TFLOP/s B", "verdict"], body, 1)
    return (f"<h3>{b} against {a}</h3><p class=summary>{_e(summary_text(comparison))}</p>{table}")


def _figures(rows, calibrations) -> str:
    out = []
    x = default_x(rows)
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for metric in ("latency", "memory", "tflops"):
            if any(r.get(METRICS[metric][0]) is not None for r in rows):
                paths += metric_figures(rows, x, metric, Path(directory), "report", ("svg",))
        paths += roofline_figures(rows, calibrations, Path(directory), "report", ("svg",))
        for path in paths:
            svg = path.read_text()
            out.append(f"<figure>{svg[svg.index('<svg'):]}</figure>")
    return "\n".join(out)


def build_report(results_list, baseline: str | None = None) -> str:
    """The HTML text of the report of one or more loaded results files."""
    parts = [f"<h1>natbench report</h1><p>{_e(', '.join(r.path.name for r in results_list))}; "
             f"written {datetime.now():%Y-%m-%d %H:%M}. Ratios are B/A: below 1, B is faster. A verdict "
             f"needs a t test on the rows' round medians at p &lt; 0.05 (paired by round within a run; "
             f"across runs, after the drift of the other backends is divided out): its ratio CI then "
             f"excludes 1.</p>"]
    for results in results_list:
        parts.append(_header_section(results))
        parts.append(_results_section(results))
        backends = list(dict.fromkeys(r["backend"] for r in results.rows))
        base = baseline if baseline in backends else backends[0]
        others = [b for b in backends if b != base]
        if others:
            parts.append(f"<h3>Comparisons against {_e(base)}</h3>")
            parts += [_comparison_section(c) for c in compare_backends(results.rows, base, others)]
    if len(results_list) == 2:
        a, b = results_list
        runs = compare_runs(a, b, a.path.name, b.path.name)
        parts.append(f"<h2>{_e(b.path.name)} against {_e(a.path.name)}</h2>"
                     f"<p class=summary>{_e(chance_text(calls_by_chance(runs)))}</p>")
        parts += [_comparison_section(c) for c in runs]
    rows, calibrations = tagged_rows(results_list)
    parts.append("<h2>Figures</h2>" + _figures(rows, calibrations))
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>natbench report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
