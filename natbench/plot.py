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
CASE_FIELDS = ("label", "rank", "batch", "heads", "head_dim", "resolution", "kernel_size", "dilation",
               "stride", "is_causal", "rpb", "dtype", "device", "pass")
_TITLES = {"batch": "B", "heads": "heads", "head_dim": "D", "resolution": "map", "kernel_size": "K",
           "dilation": "dil", "stride": "stride", "is_causal": "causal", "rpb": "rpb", "rank": "rank",
           "dtype": "", "device": "", "pass": "", "label": ""}
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
    for field in ("kernel_size", "resolution", "dtype", "dilation", "head_dim", "heads", "batch",
                  "pass", "label"):
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
                 if f != "label" or members[0].get("label")]
        out.append((fixed, members))
    return out


def _series_name(row: dict, sources: int) -> str:
    return row["backend"] if sources == 1 else f"{row['backend']} ({row['_source']})"


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


def metric_figures(rows: list[dict], x: str, y: str, out_dir: Path, stem: str,
                   formats=FORMATS) -> list[Path]:
    """One figure per group of fixed fields: y against x, a line and CI band per backend."""
    if y not in METRICS:
        raise ResultsError(f"--y {y!r}: use one of {', '.join(METRICS)}.")
    if x not in CASE_FIELDS:
        raise ResultsError(f"--x {x!r}: use one of {', '.join(CASE_FIELDS)}.")
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    field, _, label, scale = METRICS[y]
    sources = len({r["_source"] for r in rows})
    paths = []
    groups = _groups(rows, x)
    for index, (fixed, members) in enumerate(groups):
        xs_all = [axis_value(r.get(x)) for r in members]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_all)
        order = sorted(set(xs_all), key=lambda v: (str(type(v)), v)) if numeric else \
            list(dict.fromkeys(map(str, xs_all)))
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        series: dict[str, list[dict]] = {}
        for row in members:
            series.setdefault(_series_name(row, sources), []).append(row)
        plotted, left_out, values = 0, 0, []
        for name, series_rows in series.items():
            good = [r for r in series_rows if usable(r) and r.get(field) is not None]
            left_out += len(series_rows) - len(good)
            if not good:
                continue
            good.sort(key=lambda r: order.index(axis_value(r.get(x)) if numeric else str(axis_value(r.get(x)))))
            xs = [axis_value(r.get(x)) if numeric else order.index(str(axis_value(r.get(x)))) for r in good]
            ys = [r[field] * scale for r in good]
            line, = ax.plot(xs, ys, marker="o", label=name)
            bands = [_band(r, y) for r in good]
            if all(b is not None for b in bands):
                ax.fill_between(xs, [b[0] for b in bands], [b[1] for b in bands], color=line.get_color(),
                                alpha=0.2, linewidth=0)
            plotted += 1
            values += ys
        if not plotted:
            plt.close(fig)
            continue
        if numeric and _spans(order, 16):  # maps 14..256 yes, kernels 3..31 no
            ax.set_xscale("log", base=2)
            ax.set_xticks(order, [str(v) for v in order])
        elif not numeric:
            ax.set_xticks(range(len(order)), order)
        elif len(order) <= 16:
            ax.set_xticks(order, [str(v) for v in order])
        if _spans(values, 10):
            ax.set_yscale("log")
        ax.set_xlabel(_TITLES.get(x) or x if x not in ("kernel_size", "resolution") else
                      {"kernel_size": "kernel size K (NA) = window (Swin)", "resolution": "feature map"}[x])
        ax.set_ylabel(label + (" (band: 95% CI)" if METRICS[y][1] else ""))
        ax.set_title(f"{label} vs {x}\n{', '.join(fixed)}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        if left_out:
            fig.text(0.01, -0.02, f"{left_out} rows left out: skipped, failed or wrong answers "
                     f"(see the results table)", fontsize=7)
        suffix = f"-{index + 1}" if len(groups) > 1 else ""
        paths += _save(fig, out_dir, f"{stem}-{y}-vs-{x}{suffix}", formats)
        plt.close(fig)
    return paths


def roofline_figures(rows: list[dict], calibrations: dict, out_dir: Path, stem: str,
                     formats=FORMATS) -> list[Path]:
    """Per (device, dtype): achieved FLOP/s against arithmetic intensity under the calibrated roofs."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = len({r["_source"] for r in rows})
    paths = []
    for (device, dtype), calibration in calibrations.items():
        good = [r for r in rows if r["device"] == device and r["dtype"] == dtype and usable(r)
                and r.get("flops")]
        if not good:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        intensities = []
        series: dict[str, list[dict]] = {}
        for row in good:
            series.setdefault(_series_name(row, sources), []).append(row)
        for name, series_rows in series.items():
            ai = [r["flops"] / compulsory_bytes(r) for r in series_rows]
            achieved = [r["flops"] / (r["latency_ms_median"] * 1e-3) for r in series_rows]
            ax.scatter(ai, achieved, label=name, s=18)
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
        ax.legend(fontsize=8)
        paths += _save(fig, out_dir, f"{stem}-roofline-{device}-{dtype}", formats)
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

