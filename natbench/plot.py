"""Figures of results files (matplotlib, the optional extra `plot`): a metric against one case
axis with one line per backend and its 95% CI band, and a roofline.

Each figure holds the rows that agree on every other case field; the fields that stay fixed go
in the title. Rows that did not run, or whose answer was wrong, are left out and counted in a
note under the plot.

The roofline places each row at its arithmetic intensity, FLOPs (the convention) over the
compulsory traffic: q, k, v read and the output written once in the forward; the backward adds
out and dout read and dq, dk, dv written (4, 8 and 12 tensors of [B, N, heads, D] for fwd, bwd
and fwdbwd; the bias table is left out). The roofs are the run's own calibration: its matmul
FLOP/s and its copy bandwidth.
"""

from __future__ import annotations

import json
from math import prod
from pathlib import Path

from natbench.errors import ResultsError

# metric -> (row field, CI fields or None, axis label, scale applied to the values)
METRICS = {
    "latency": ("latency_ms_median", ("latency_ms_ci_low", "latency_ms_ci_high"), "median latency (ms)", 1.0),
    "memory": ("peak_memory_bytes", None, "peak extra memory (MiB)", 2.0 ** -20),
    "tflops": ("tflops", "inverse", "achieved TFLOP/s", 1.0),
    "pct_of_peak": ("pct_of_peak", "inverse", "% of the calibrated matmul peak", 1.0),
}
CASE_FIELDS = ("label", "model", "image_size", "rank", "batch", "heads", "head_dim", "resolution", "kernel_size", "dilation",
               "stride", "is_causal", "rpb", "dtype", "device", "pass")
_TITLES = {"batch": "B", "heads": "heads", "head_dim": "D", "resolution": "map", "kernel_size": "K",
           "dilation": "dil", "stride": "stride", "is_causal": "causal", "rpb": "rpb", "rank": "rank",
           "dtype": "", "device": "", "pass": "", "label": "", "model": "", "image_size": "image"}
_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
_TENSORS = {"fwd": 4, "bwd": 8, "fwdbwd": 12}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ResultsError("plots need matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axis_value(value):
    """A case field as a plot coordinate: equal per-axis values collapse to one number."""
    if isinstance(value, list):
        if all(v == value[0] for v in value):
            return axis_value(value[0])
        return "x".join(str(int(v)) if isinstance(v, bool) else str(v) for v in value)
    return value


def _words(field: str, value) -> str:
    title = _TITLES.get(field, field)
    value = axis_value(value)
    return f"{title} {value}" if title else str(value)


def compulsory_bytes(row: dict) -> int:
    tensor = row["batch"] * prod(row["resolution"]) * row["heads"] * row["head_dim"]
    return _TENSORS[row["pass"]] * tensor * _BYTES[row["dtype"]]


def usable(row: dict) -> bool:
    return row["status"] == "ok" and row.get("check") != "fail"


def default_x(rows: list[dict]) -> str:
    """The first case field that varies: the natural x axis of a sweep."""
    for field in ("kernel_size", "resolution", "image_size", "dtype", "dilation", "head_dim", "heads",
                  "batch", "pass", "label", "model"):
        if len({json.dumps(r.get(field)) for r in rows}) > 1:
            return field
    return "kernel_size"


def _groups(rows: list[dict], x: str) -> list[tuple[list[str], list[dict]]]:
    """Rows split by every case field but x; each group with the words of its fixed fields."""
    others = [f for f in CASE_FIELDS if f != x]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row.get(f) for f in others]), []).append(row)
    out = []
    for members in groups.values():
        fixed = [_words(f, members[0].get(f)) for f in others
                 if members[0].get(f) is not None and (f != "label" or members[0].get("label"))]
        out.append((fixed, members))
    return out


# One colour per shipped backend in every figure, report and run: natten always blue. Plugins take
# a colour of EXTRA_COLOURS by a hash of their name (the same in every figure), the next free one
# where two meet in a figure.
COLOURS = {"natten": "#1f5fbf", "natten-unfused": "#7fb2e5", "torch": "#2a9d3a", "flex": "#8e44ad",
           "natten-lib": "#f07f0e", "swin": "#d62728", "swin-explicit": "#f2a1a1", "sdpa": "#6e6e6e",
           "reference": "#000000"}
EXTRA_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39", "#7b4173")
# Runs (results files) told apart by line style and marker.
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
MAX_LINES = 8  # lines on one axes; more go into panels side by side


def colours(backends) -> dict[str, str]:
    """Each backend's colour: its own, or a plugin's from EXTRA_COLOURS, never one taken twice."""
    import zlib

    chosen = {b: COLOURS[b] for b in backends if b in COLOURS}
    # a model on a backend (`nat_pair natten`) takes its backend's colour while no other line has it
    for name in sorted(b for b in set(backends) if b not in COLOURS and " " in b):
        own = COLOURS.get(name.rsplit(" ", 1)[1])
        if own and own not in chosen.values():
            chosen[name] = own
    for backend in sorted(b for b in set(backends) if b not in chosen):
        start = zlib.crc32(backend.encode()) % len(EXTRA_COLOURS)
        free = [EXTRA_COLOURS[(start + i) % len(EXTRA_COLOURS)] for i in range(len(EXTRA_COLOURS))]
        chosen[backend] = next((c for c in free if c not in chosen.values()), free[0])
    return chosen


def _panels(keys: list[tuple[str, str]], sources: list[str]) -> list[list[tuple[str, str]]]:
    """(backend, source) lines split into panels of at most MAX_LINES: one run per panel when
    several runs have too many lines together, and chunks of backends within a run."""
    if len(keys) <= MAX_LINES:
        return [keys]
    panels = []
    for source in sources:
        mine = [k for k in keys if k[1] == source]
        panels += [mine[i:i + MAX_LINES] for i in range(0, len(mine), MAX_LINES)]
    return [p for p in panels if p]


def _plain(value, _position=None) -> str:
    """A tick label in plain numbers (0.5, 2, 100), not powers of ten."""
    return f"{value:g}" if value < 1e5 else f"{value:.0e}"


def _spans(values, factor: float) -> bool:
    """Whether the positive values span at least `factor` (max / min): then a log axis."""
    positive = [v for v in values if isinstance(v, (int, float)) and v > 0]
    return bool(positive) and max(positive) / min(positive) >= factor


def _band(row: dict, metric: str):
    field, ci, _, scale = METRICS[metric]
    if ci is None or row.get(field) is None:
        return None
    if ci == "inverse":  # a rate: its CI comes from the latency's, inverted
        median = row["latency_ms_median"]
        return (row[field] * median / row["latency_ms_ci_high"] * scale,
                row[field] * median / row["latency_ms_ci_low"] * scale)
    return row[ci[0]] * scale, row[ci[1]] * scale


FORMATS = ("png", "svg")


def _save(fig, out_dir: Path, name: str, formats=FORMATS) -> list[Path]:
    paths = []
    for suffix in formats:
        path = out_dir / f"{name}.{suffix}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def _line_groups(rows: list[dict], x: str, point) -> list[tuple[list[str], dict, int, list]]:
    """Per group of fixed case fields: its words, {(backend, source): [(x, y, low, high)]}
    sorted along x, the rows left out, and x's order. `point(row)` is (y, low, high), or None
    for a row that gives no point."""
    out = []
    for fixed, members in _groups(rows, x):
        xs_all = [axis_value(r.get(x)) for r in members]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_all)
        # labels in the order tables list them (sorted); other words in the run's order
        order = sorted(set(xs_all)) if numeric else (
            sorted(set(map(str, xs_all))) if x == "label" else list(dict.fromkeys(map(str, xs_all))))
        lines: dict[tuple[str, str], list] = {}
        left_out = 0
        for row in members:
            value = point(row)
            if value is None:
                left_out += 1
                continue
            at = axis_value(row.get(x))
            lines.setdefault((row["backend"], row["_source"]), []).append(
                (at if numeric else order.index(str(at)), *value))
        for points in lines.values():
            points.sort()
        if lines:
            out.append((fixed, lines, left_out, numeric, order))
    return out


_LEFT_OUT = "skipped, failed or wrong answers (see the results table)"


def _draw(plt, groups, x: str, ylabel: str, title: str, out_dir: Path, name: str, formats,
          reference: float | None = None, reference_label: str = "", left_out_why: str = _LEFT_OUT) -> list[Path]:
    """One figure per group: a line per (backend, run) in the backend's colour and the run's
    style, a 95% CI band where the points have one, panels of at most MAX_LINES lines, the legend
    outside the axes, log axes labelled in plain numbers."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    paths = []
    for index, (fixed, lines, left_out, numeric, order) in enumerate(groups):
        sources = list(dict.fromkeys(source for _, source in lines))
        palette = colours([backend for backend, _ in lines])
        style = {source: STYLES[i % len(STYLES)] for i, source in enumerate(sources)}
        panels = _panels(list(lines), sources)
        fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels) + 2.2, 4.6), sharey=True,
                                 squeeze=False, layout="constrained")
        values = [p[1] for points in lines.values() for p in points]
        for ax, panel in zip(axes[0], panels):
            for key in panel:
                backend, source = key
                xs = [p[0] for p in lines[key]]
                ys = [p[1] for p in lines[key]]
                linestyle, marker = style[source]
                ax.plot(xs, ys, color=palette[backend], linestyle=linestyle, marker=marker, markersize=4)
                if all(p[2] is not None for p in lines[key]):
                    ax.fill_between(xs, [p[2] for p in lines[key]], [p[3] for p in lines[key]],
                                    color=palette[backend], alpha=0.15, linewidth=0)
            if reference is not None:
                ax.axhline(reference, color="black", linewidth=0.9)
            if numeric and _spans(order, 16):  # maps 14..256 yes, kernels 3..31 no
                ax.set_xscale("log", base=2)
                ax.set_xticks(order, [str(v) for v in order])
            elif not numeric:
                ax.set_xticks(range(len(order)), order)
            elif len(order) <= 16:
                ax.set_xticks(order, [str(v) for v in order])
            if reference is not None or _spans(values, 10):
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(_plain))
                # under a decade of values the minor ticks (0.7, 0.8, 2, 3, ...) carry the scale
                ax.yaxis.set_minor_formatter(FuncFormatter(_plain) if not _spans(values, 10) else NullFormatter())
            ax.set_xlabel({"kernel_size": "kernel size K (NA) = window (Swin)",
                           "resolution": "feature map"}.get(x, _TITLES.get(x) or x))
            ax.grid(True, which="both", alpha=0.3)
            if len(panels) > 1 and len(sources) > 1 and len({s for _, s in panel}) == 1:
                ax.set_title(panel[0][1], fontsize=9)
        axes[0][0].set_ylabel(ylabel)
        fig.suptitle(f"{title}\n{', '.join(fixed)}", fontsize=10)
        shipped = list(COLOURS)
        ordered = sorted(dict.fromkeys(backend for backend, _ in lines),
                         key=lambda b: (shipped.index(b) if b in shipped else len(shipped), b))
        handles = [Line2D([], [], color=palette[b], marker="o", markersize=4, label=b) for b in ordered]
        if len(sources) > 1:
            handles += [Line2D([], [], color="black", linestyle=style[s][0], marker=style[s][1],
                               markersize=4, label=f"run {s}") for s in sources]
        if reference is not None:
            handles.append(Line2D([], [], color="black", linewidth=0.9, label=reference_label))
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
        if left_out:
            fig.text(0.01, -0.04, f"{left_out} rows left out: {left_out_why}", fontsize=7)
        suffix = f"-{index + 1}" if len(groups) > 1 else ""
        paths += _save(fig, out_dir, f"{name}{suffix}", formats)
        plt.close(fig)
    return paths


def metric_figures(rows: list[dict], x: str, y: str, out_dir: Path, stem: str,
                   formats=FORMATS) -> list[Path]:
    """One figure per group of fixed fields: y against x, a line and CI band per backend and run."""
    if y not in METRICS:
        raise ResultsError(f"--y {y!r}: use one of {', '.join(METRICS)}, ratio.")
    if x not in CASE_FIELDS:
        raise ResultsError(f"--x {x!r}: use one of {', '.join(CASE_FIELDS)}.")
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    field, ci, label, scale = METRICS[y]

    def point(row):
        if not usable(row) or row.get(field) is None:
            return None
        band = _band(row, y)
        return (row[field] * scale, *(band if band else (None, None)))

    return _draw(plt, _line_groups(rows, x, point), x, label + (" (band: 95% CI)" if ci else ""),
                 f"{label} vs {x}", out_dir, f"{stem}-{y}-vs-{x}", formats)


def ratio_figures(rows: list[dict], baselines: dict[str, str], x: str, out_dir: Path, stem: str,
                  formats=FORMATS, metric: str = "latency") -> list[Path]:
    """Each backend's time (or peak memory: metric "memory") over its run's baseline's
    (`baselines`: run -> backend) against x, the time ratio with its 95% CI from the rounds
    (compare.py), and the baseline as the line at 1. Networks and block pairs compare as their
    tables do: a line per model and backend against the baseline's model (console.network_view)."""
    from natbench.compare import compare_backends
    from natbench.console import network_view

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    ratios, candidates, named = {}, [], set()
    for source, baseline in baselines.items():
        mine, base = network_view([r for r in rows if r["_source"] == source], baseline)
        named.add(base)
        others = list(dict.fromkeys(r["backend"] for r in mine if r["backend"] != base))
        candidates += [r for r in mine if r["backend"] != base]
        for comparison in compare_backends(mine, base, others):
            for pair in comparison.pairs:
                if metric == "memory" and pair.memory_ratio is not None:
                    ratios[(source, comparison.b_label, pair.case_key)] = (pair.memory_ratio, None, None)
                elif metric == "latency" and pair.ratio is not None:
                    ratios[(source, comparison.b_label, pair.case_key)] = (pair.ratio, pair.ratio_low,
                                                                           pair.ratio_high)
    if not ratios:
        return []
    named = " or ".join(sorted(named))
    quantity = "time" if metric == "latency" else "peak extra memory"

    def point(row):
        return ratios.get((row["_source"], row["backend"], row["case_key"]))

    # the view names a network's size in its label, its column being the family
    along = "label" if x == "model" else x
    return _draw(plt, _line_groups(candidates, along, point), along,
                 f"{quantity} / {named} (below 1: less" + ("; band: 95% CI)" if metric == "latency" else ")"),
                 f"{quantity} ratio to {named} vs {x}", out_dir,
                 f"{stem}-{'ratio' if metric == 'latency' else 'memory-ratio'}-vs-{x}", formats,
                 reference=1.0, reference_label=f"{named} (= 1)",
                 left_out_why="no ratio: skipped, failed, wrong answers, or no CI (see the comparisons)")


def roofline_figures(rows: list[dict], calibrations: dict, out_dir: Path, stem: str,
                     formats=FORMATS) -> list[Path]:
    """Per (device, dtype): achieved FLOP/s against arithmetic intensity under the calibrated roofs."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = len({r["_source"] for r in rows})
    paths = []
    for (device, dtype), calibration in calibrations.items():
        good = [r for r in rows if r["device"] == device and r["dtype"] == dtype and usable(r)
                and r.get("flops") and r.get("op") != "model"]  # a network has no compulsory bytes here
        if not good:
            continue
        fig, ax = plt.subplots(figsize=(8.6, 4.6), layout="constrained")
        intensities = []
        series: dict[tuple[str, str], list[dict]] = {}
        for row in good:
            series.setdefault((row["backend"], row["_source"]), []).append(row)
        palette = colours([backend for backend, _ in series])
        runs = list(dict.fromkeys(source for _, source in series))
        for (backend, source), series_rows in series.items():
            ai = [r["flops"] / compulsory_bytes(r) for r in series_rows]
            achieved = [r["flops"] / (r["latency_ms_median"] * 1e-3) for r in series_rows]
            ax.scatter(ai, achieved, color=palette[backend], marker=STYLES[runs.index(source) % len(STYLES)][1],
                       s=18, label=backend if sources == 1 else f"{backend} ({source})")
            intensities += ai
        peak, bandwidth = calibration["matmul_flops_per_s"], calibration["bandwidth_bytes_per_s"]
        low, high = min(intensities) / 2, max(intensities) * 2
        ridge = peak / bandwidth
        grid = sorted({low, high, min(max(ridge, low), high)})
        ax.plot(grid, [min(peak, bandwidth * a) for a in grid], color="black", linewidth=1.2,
                label=f"roof: {peak / 1e12:.3g} TFLOP/s matmul, {bandwidth / 1e9:.3g} GB/s copy")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP per compulsory byte)")
        ax.set_ylabel("achieved FLOP/s")
        ax.set_title(f"roofline: {device}, {dtype} (roofs from this run's calibration)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
        paths += _save(fig, out_dir, f"{stem}-roofline-{device}-{dtype}", formats)
        plt.close(fig)
    return paths


def throughput_figures(rows: list[dict], out_dir: Path, stem: str, formats=FORMATS) -> list[Path]:
    """Networks (op `model`): images/s against GMACs per image, a marker per model and backend,
    a family's models on one backend joined by a line (the papers' throughput figure); one
    figure per batch, pass, dtype and device."""
    from natbench.models import CONFIGS

    networks = [r for r in rows if r.get("op") == "model" and usable(r) and r.get("images_per_s")
                and not CONFIGS[r["model"]].pair]
    if not networks:
        return []
    plt = _pyplot()
    from matplotlib.lines import Line2D

    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[dict]] = {}
    for row in networks:
        groups.setdefault((row["batch"], row["pass"], row["dtype"], row["device"]), []).append(row)
    palette = colours([r["backend"] for r in networks])
    families = {"nat": "o", "dinat": "D", "swin": "s"}
    paths = []
    for index, ((batch, pass_, dtype, device), members) in enumerate(sorted(groups.items())):
        fig, ax = plt.subplots(figsize=(8.6, 4.8), layout="constrained")
        lines: dict[tuple, list[dict]] = {}
        for row in members:
            lines.setdefault((row["model"].split("_")[0], row["backend"], row["_source"]), []).append(row)
        for (family, backend, _), line in sorted(lines.items()):
            line.sort(key=lambda r: r["macs"])
            xs = [r["macs"] / r["batch"] / 1e9 for r in line]
            ys = [r["images_per_s"] for r in line]
            ax.plot(xs, ys, color=palette[backend], marker=families.get(family, "o"),
                    linestyle="-" if family != "swin" else "--")
            for r, x, y in zip(line, xs, ys):
                ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel("images / s (median)")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"throughput: batch {batch}, {pass_}, {dtype}, {device}", fontsize=10)
        handles = [Line2D([], [], color=palette[b], marker="o", linestyle="", label=b)
                   for b in dict.fromkeys(r["backend"] for r in members)]
        handles += [Line2D([], [], color="black", marker=m, linestyle="-" if f != "swin" else "--",
                           label={"nat": "NAT", "dinat": "DiNAT", "swin": "Swin"}[f])
                    for f, m in families.items() if any(key[0] == f for key in lines)]
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
        suffix = f"-{index + 1}" if len(groups) > 1 else ""
        paths += _save(fig, out_dir, f"{stem}-throughput{suffix}", formats)
        plt.close(fig)
    return paths


def tagged_rows(results_list) -> tuple[list[dict], dict]:
    """Rows of several results files, each tagged with its file (`_source`), and their
    calibrations by (device, dtype) (the first file's when several have one)."""
    rows, calibrations = [], {}
    for results in results_list:
        rows += [{**r, "_source": results.path.stem} for r in results.rows]
        for record in results.calibrations:
            calibrations.setdefault((record["device"], record["dtype"]), record)
    if not rows:
        raise ResultsError(f"{', '.join(str(r.path) for r in results_list)}: no result rows to plot.")
    return rows, calibrations

