"""natbench report: one self-contained HTML file (inline CSS and SVG figures, no network) that
leads with the answer: what changed between two runs, each backend against the baseline with the
fastest per case, the figures (latency beside the ratio to the baseline), then the tables in case
order, the comparisons, and each run's environment and calibration folded at the end."""

from __future__ import annotations

import html
import json
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from natbench.compare import Comparison, calls_by_chance, compare_backends, compare_runs, run_baselines
from natbench.console import (case_columns, case_name, cell, chance_text, comparison_cells, latency_text,
                              network_view, summary_text, table_unit, verdict_text)
from natbench.plot import (METRICS, default_x, metric_figures, ratio_figures, roofline_figures, tagged_rows,
                           throughput_figures)
from natbench.store import case_order

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; padding: 0 1.5rem; max-width: 1400px;
       color: #1d1d1f; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.55rem; text-align: right; vertical-align: top; }
th { background: #f2f4f7; } td.text, th.text { text-align: left; } td:first-child { white-space: nowrap; }
.faster { color: #087f23; font-weight: 600; } .slower { color: #b3261e; font-weight: 600; }
.unknown { color: #8a6d00; } .same { color: #666; }
.summary { background: #f7f9fc; border-left: 4px solid #4a78c2; padding: 0.5rem 0.8rem; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
details { margin: 0.4rem 0; } code { font-size: 0.85rem; } summary { cursor: pointer; }
small { color: inherit; opacity: 0.8; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.8rem; }
"""
_VERDICT_CLASS = {"faster": "faster", "slower": "slower", "no significant difference": "same",
                  "unknown": "unknown"}


def _e(value) -> str:
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[str]], text_columns: int = 0, css: str = "") -> str:
    """An HTML table of already-escaped cells; the first `text_columns` align left."""
    def cells(values, tag):
        return "".join(f'<{tag}{" class=text" if i < text_columns else ""}>{v}</{tag}>'
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table{f' class={css}' if css else ''}><tr>{cells(head, 'th')}</tr>{body}</table>"


def _environment_section(results) -> str:
    """The run's environment header and calibration, folded: what a reader needs last."""
    header = results.header
    env = dict(header.get("env", {}))
    facts = {"suite": header.get("suite"), "command": header.get("command"),
             "started": header.get("started_at"), **env}
    rows = [[_e(k), f"<code>{_e(json.dumps(v) if isinstance(v, (list, dict)) else v)}</code>"]
            for k, v in facts.items() if v not in (None, "", [], {})]
    out = [f"<details><summary>Environment of {_e(results.path.name)}</summary>", _table(["key", "value"], rows, 2)]
    if results.calibrations:
        out.append("<p>Calibration (this run's attainable rates)</p>")
        out.append(_table(["device", "dtype", "matmul TFLOP/s", "copy GB/s"],
                          [[_e(c["device"]), _e(c["dtype"]), f"{c['matmul_flops_per_s'] / 1e12:.3g}",
                            f"{c['bandwidth_bytes_per_s'] / 1e9:.3g}"] for c in results.calibrations], 2))
    out.append("</details>")
    return "\n".join(out)


def _by_case(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """Rows by case (in case order), then by backend."""
    by_case: dict[str, dict[str, dict]] = {}
    for row in sorted(rows, key=case_order):
        by_case.setdefault(row["case_key"], {})[row["backend"]] = row
    return by_case


def _results_section(results, metric: str) -> str:
    """One run's backends side by side per case, in case order, the unit in the headers."""
    rows, _ = network_view(results.rows, None)
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    unit, scale = table_unit(rows, metric)
    columns = case_columns(rows)
    body = []
    for cells in _by_case(rows).values():
        first = next(iter(cells.values()))
        values = [_e(case_name(first, columns))]
        for backend in backends:
            row = cells.get(backend)
            if row is None:
                values.append("-")
            elif row["status"] != "ok":
                values.append(f'<span class=unknown title="{_e(row.get("reason"))}">{_e(row["status"])}</span>')
            elif row.get("check") == "fail":
                values.append(f'<span class=slower>WRONG</span> {_e(_plain_cell(row, metric, scale))}')
            else:
                values.append(_e(_plain_cell(row, metric, scale)))
        body.append(values)
    title = {"latency": "median latency, ±95% CI half-width", "memory": "peak extra memory"}[metric]
    return (f"<h3>{_e(results.path.name)}: {title} ({unit})</h3>"
            + _table(["case", *(f"{_e(b)} ({unit})" for b in backends)], body, 1, "results"))


def _plain_cell(row: dict, metric: str, scale: float) -> str:
    return re.sub(r"\[/?[a-z ]*\]", "", cell(row, metric, scale))


def _ratio_cell(pair) -> str:
    if pair.ratio is None:
        return f'<span class=unknown title="{_e(pair.reason)}">?</span>'
    return (f'<span class="{_VERDICT_CLASS[pair.verdict]}" title="{_e(verdict_text(pair))}">{pair.ratio:.2f}x '
            f'<br><small>[{pair.ratio_low:.2f}, {pair.ratio_high:.2f}]</small></span>')


def fastest(cells: dict[str, dict]) -> tuple[str, str] | None:
    """The case's backend of lowest median among those that ran with a correct answer, and how
    sure: against the runner-up by the rounds' paired test (verdict.decide)."""
    from natbench.verdict import FASTER, decide

    usable = sorted((r for r in cells.values() if r["status"] == "ok" and r.get("check") != "fail"
                     and r.get("latency_ms_median")), key=lambda r: r["latency_ms_median"])
    if not usable:
        return None
    if len(usable) == 1:
        return usable[0]["backend"], "the only one that ran"
    best, second = usable[0], usable[1]
    if best.get("round_medians_ms") and second.get("round_medians_ms"):
        decision = decide(second, best, same_run=True)
        if decision.verdict == FASTER:
            return best["backend"], f"{1 / decision.ratio:.2f}x faster than {second['backend']}"
        return best["backend"], f"not significantly faster than {second['backend']}"
    return best["backend"], f"lowest median; no CI against {second['backend']}"


@dataclass
class _Judged:
    """One run as its tables read it (console.network_view), and every other backend against its
    baseline: computed once for the summary and the comparisons."""
    rows: list
    baseline: str
    why: str
    comparisons: list


def _judged(results, baseline: str, why: str) -> _Judged:
    rows, baseline = network_view(results.rows, baseline)
    others = [b for b in dict.fromkeys(r["backend"] for r in rows) if b != baseline]
    return _Judged(rows, baseline, why, compare_backends(rows, baseline, others))


def _summary_section(results, judged: _Judged) -> str:
    """The answer first: each backend against the baseline over the run (geometric mean, CI,
    faster/slower/tied), then per case the fastest backend and every ratio with its CI."""
    rows, baseline, why, comparisons = judged.rows, judged.baseline, judged.why, judged.comparisons
    others = [c.b_label for c in comparisons]
    columns = case_columns(rows)
    lines = []
    for c in comparisons:
        s = c.summary
        ratio = "-" if not s.n else f"{s.geomean:.2f}x [{s.geomean_low:.2f}, {s.geomean_high:.2f}]"
        lines.append([_e(c.b_label), _e(ratio), str(s.wins), str(s.losses), str(s.ties), str(s.unknown),
                      _e("-" if s.worst is None else f"{s.worst.ratio:.2f}x at "
                         f"{case_name(s.worst.any_row, columns)}")])
    overall = _table(["backend", f"time / {_e(baseline)} (geometric mean, 95% CI)", "faster", "slower",
                      "no significant difference", "unknown", "worst case"], lines, 1)
    by_case = _by_case(rows)
    pairs = {(c.b_label, p.case_key): p for c in comparisons for p in c.pairs}
    body = []
    for key, cells in by_case.items():
        first = next(iter(cells.values()))
        best = fastest(cells)
        base = cells.get(baseline)
        body.append([_e(case_name(first, columns)),
                     "-" if best is None else f"<b>{_e(best[0])}</b> <small>{_e(best[1])}</small>",
                     _e(latency_text(base)), *[_ratio_cell(pairs[(b, key)]) for b in others]])
    per_case = _table(["case", "fastest", f"{_e(baseline)} (median)", *(f"{_e(b)} / {_e(baseline)}" for b in others)],
                      body, 2, "ratios")
    return (f"<section id=summary><h2>Summary: {_e(results.path.name)}</h2>"
            f"<p class=summary>Baseline <b>{_e(baseline)}</b> ({_e(why)}). Ratios are time over the "
            f"baseline's: below 1 is faster. Green: faster, red: slower, grey: no significant "
            f"difference (95% CI of the ratio from the rounds).</p>{overall}{per_case}</section>")


def _changes_section(a, b) -> str:
    """Two runs: per backend, B's time over A's after the machine's drift is divided out."""
    runs = compare_runs(a, b, a.path.name, b.path.name)
    body = []
    for c in runs:
        s = c.summary
        ratio = "-" if not s.n else f"{s.geomean:.2f}x [{s.geomean_low:.2f}, {s.geomean_high:.2f}]"
        body.append([_e(c.a_label.split(" @ ")[0]), _e(ratio), str(s.wins), str(s.losses), str(s.ties),
                     str(s.unknown), _e(f"{c.drift.factor:.3f}x ({c.drift.source})" if c.drift else "-")])
    table = _table(["backend", f"{_e(b.path.name)} / {_e(a.path.name)} (geometric mean, 95% CI)",
                    "faster", "slower", "no significant difference", "unknown", "drift divided out"], body, 1)
    details = "".join(f"<details><summary>{_e(c.a_label.split(' @ ')[0])}, case by case</summary>"
                      f"<p>{_e(summary_text(c))}</p>{_comparison_table(c)}</details>" for c in runs)
    return (f"<section id=changes><h2>What changed: {_e(b.path.name)} against {_e(a.path.name)}</h2>"
            f"<p class=summary>{_e(chance_text(calls_by_chance(runs)))}</p>{table}{details}</section>")


def _comparison_table(comparison: Comparison) -> str:
    columns = case_columns([p.any_row for p in comparison.pairs])
    body = []
    for pair in comparison.pairs:
        body.append([_e(case_name(pair.any_row, columns)), *map(_e, comparison_cells(pair)),
                     f'<span class={_VERDICT_CLASS[pair.verdict]}>{_e(verdict_text(pair))}</span>'])
    a, b = _e(comparison.a_label), _e(comparison.b_label)
    return _table(["case", f"A: {a}", f"B: {b}", "B/A [95% CI]", "memory B/A", "TFLOP/s A",
                   "TFLOP/s B", "verdict"], body, 1)


def _figures(rows, calibrations, baselines: dict[str, str], side_by_side: bool) -> str:
    """The latency and the ratio to the baseline (side by side for one run; several runs draw a
    panel each, too wide to pair), then memory and the roofline."""
    x = default_x(rows)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        latency = metric_figures(rows, x, "latency", folder, "report", ("svg",))
        ratio = ratio_figures(rows, baselines, x, folder, "report", ("svg",))
        rest = []
        for metric in ("memory", "tflops"):
            if any(r.get(METRICS[metric][0]) is not None for r in rows):
                rest += metric_figures(rows, x, metric, folder, "report", ("svg",))
                if metric == "memory":
                    rest += ratio_figures(rows, baselines, x, folder, "report", ("svg",), metric="memory")
        rest += roofline_figures(rows, calibrations, folder, "report", ("svg",))
        rest = throughput_figures(rows, folder, "report", ("svg",)) + rest

        def figure(path):
            svg = path.read_text()
            return f"<figure>{svg[svg.index('<svg'):]}</figure>"

        if not side_by_side:
            return "".join(figure(p) for p in [*latency, *ratio, *rest])
        pairs = "".join(f"<div class=pair>{figure(a)}{figure(b)}</div>" for a, b in zip(latency, ratio))
        alone = latency[len(ratio):] + ratio[len(latency):] + rest
        return pairs + "".join(figure(p) for p in alone)


def build_report(results_list, baseline: str | None = None) -> str:
    """The HTML text of the report of one or more loaded results files: what changed (two runs),
    the summary against the baseline, the figures, the tables in case order, the comparisons and
    the environments folded at the end."""
    picked = run_baselines(results_list, baseline)
    parts = [f"<h1>natbench report</h1><p>{_e(', '.join(r.path.name for r in results_list))}; "
             f"written {datetime.now():%Y-%m-%d %H:%M}. A verdict (faster, slower) needs a t test on "
             f"the rows' round medians at p &lt; 0.05 (paired by round within a run; across runs, after "
             f"the drift of the other backends is divided out): its ratio CI then excludes 1.</p>"]
    if len(results_list) == 2:
        parts.append(_changes_section(*results_list))
    judged = {r.path.stem: _judged(r, *picked[r.path.stem]) for r in results_list if r.path.stem in picked}
    for results in results_list:
        if results.path.stem in judged:
            parts.append(_summary_section(results, judged[results.path.stem]))
    rows, calibrations = tagged_rows(results_list)
    parts.append("<h2 id=figures>Figures</h2>" + _figures(rows, calibrations,
                                                          {s: name for s, (name, _) in picked.items()},
                                                          len(results_list) == 1))
    parts.append("<h2>Results</h2>")
    for results in results_list:
        parts.append(_results_section(results, "latency"))
        if any(r.get("peak_memory_bytes") is not None for r in results.rows):
            parts.append(_results_section(results, "memory"))
    parts.append("<h2>Comparisons</h2>")
    for results in results_list:
        if results.path.stem in judged:
            parts += [f"<details><summary>{_e(results.path.name)}: {_e(summary_text(c))}</summary>"
                      f"{_comparison_table(c)}</details>" for c in judged[results.path.stem].comparisons]
    parts.append("<h2>Environment</h2>" + "".join(_environment_section(r) for r in results_list))
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>natbench report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
