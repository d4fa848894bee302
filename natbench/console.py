"""The only module that imports rich: progress, tables, and the --json / --quiet modes.

Results go to stdout; progress, warnings and errors to stderr. With --json stdout carries JSON
only.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from statistics import median

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from natbench.case import OTHER_FAMILY
from natbench.store import case_order, single_sample

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# Case fields that may vary across a suite, in display order, and their column titles.
_CASE_COLUMNS = (("label", "label"), ("image_size", "image"), ("rank", "rank"), ("batch", "B"), ("heads", "heads"),
                 ("head_dim", "D"), ("resolution", "map"), ("kernel_size", "K"),
                 ("dilation", "dil"), ("stride", "stride"), ("is_causal", "causal"),
                 ("rpb", "rpb"), ("dtype", "dtype"), ("device", "device"), ("pass", "pass"))


class Sink:
    """Where a command's output goes, according to --json and --quiet."""

    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode, self.quiet = json_mode, quiet

    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode:
            err.print(message, highlight=False)

    def warn(self, message: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    def json(self, value) -> None:
        print(json.dumps(value, default=str), flush=True)

    def table(self, table: Table) -> None:
        if not self.json_mode:
            out.print(table)

    @contextmanager
    def progress(self, total: int):
        """Yields update(description) to call once per finished step."""
        if self.quiet or self.json_mode:
            yield lambda description: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("starting", total=total)

            def update(description: str) -> None:
                progress.update(task, advance=1, description=description)

            yield update


class RunWatch:
    """What a run shows as it goes (session.execute tells it each step): notes and a progress bar
    on stderr, and with --json each row on stdout as it finishes."""

    def __init__(self, sink: Sink):
        self.sink = sink

    def preparing(self, names: list[str], building: bool) -> None:
        self.sink.info(f"compiling {', '.join(names)} ahead of measuring"
                       + (", while the extension builds" if building else ""))

    def starting(self, suite: str, cases: int, backends: int, device: str, rounds: int, threads: int,
                 todo: int, path) -> None:
        self.sink.info(f"{suite}: {cases} cases x {backends} backends on {device}, {rounds} rounds, "
                       f"{threads_text(threads)}; {todo} to measure; results -> {path}")

    def calibrating(self, device: str, dtype: str) -> None:
        self.sink.info(f"calibrating {device} {dtype} matmul and copy bandwidth")

    def progress(self, total: int):
        return self.sink.progress(total)

    def finished(self, row: dict) -> None:
        if self.sink.json_mode:
            self.sink.json(row)

    def interrupted(self, rows: int, rounds: int, path, command: str) -> None:
        self.sink.warn(f"interrupted: {rows} finished rows and {rounds} rounds of unfinished pairs "
                       f"are on disk in {path}; continue with `{command}`.")


def run_report(rows: list[dict], backends: list[str], title: str, sink: Sink, baseline: str | None = None,
               show: tuple = ("latency",)) -> None:
    """What a run ends with: its results table (and the memory table when asked), the skipped
    rows' reasons, the warnings about the rows, and a line per backend against the baseline."""
    rows, baseline = network_view(rows, baseline)
    if any(r.get("op") == "model" for r in rows):
        backends = list(dict.fromkeys(r["backend"] for r in rows))
    for metric in show:
        for table in results_tables(rows, backends, f"{title}: {METRIC_TITLES[metric]}", metric, out.width):
            sink.table(table)
    for line in skip_reasons(rows):
        sink.info(f"  {line}")
    for warning in (noise_warning(rows), single_sample_warning(rows), load_warning(rows),
                    step_warning(rows)):
        if warning:
            sink.warn(warning)
    wrong = [r for r in rows if r.get("check") == "fail"]
    if wrong:
        sink.warn(f"{len(wrong)} rows computed a wrong answer (WRONG above): their timings are "
                  f"not results.")
    if baseline is not None and not sink.json_mode:
        for line in baseline_lines(rows, backends, baseline):
            out.print(line, highlight=False)


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _axes(value) -> str:
    if isinstance(value, list):
        if all(v == value[0] for v in value):
            value = value[0]
        else:
            return "x".join(str(int(v)) if isinstance(v, bool) else str(v) for v in value)
    return str(value)


def case_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(field, title) of the case fields that vary over `rows` (map and K, or a network's image
    size, always)."""
    networks = any(r.get("op") == "model" for r in rows)
    columns = []
    for key, title in _CASE_COLUMNS:
        values = {_axes(r.get(key)) for r in rows}
        if key == "label":
            if any(r.get("label") for r in rows):
                columns.append((key, title))
        elif len(values) > 1 or key in (("image_size",) if networks else ("resolution", "kernel_size")):
            columns.append((key, title))
    return columns


_FAMILY_ORDER = ("nat", "dinat", "nat_pair", "swin", "swin_pair")


def network_view(rows: list[dict], baseline: str | None) -> tuple[list[dict], str | None]:
    """Rows of networks (op `model`) as tables and comparisons read them: each family on each
    backend is a column (`nat natten`, `swin swin`), a case is what they share (a network's size
    or a block pair's stage, as its label, then image size, batch, dtype, device and pass), so
    NAT-T meets Swin-T and NAT-B Swin-B; a model that cannot run on a backend (NAT on swin) is no
    column. The baseline becomes the first column on that backend. Other rows pass through."""
    if not any(r.get("op") == "model" for r in rows):
        return rows, baseline
    from natbench.models import CONFIGS, SIZES, pair_label

    view = []
    for r in rows:
        if r.get("op") != "model":
            view.append(r)
        elif not (r["status"] == "skipped" and OTHER_FAMILY in (r.get("reason") or "")):
            shared = f"i{r['image_size']}-b{r['batch']}-{r['dtype']}-{r['device']}-{r['pass']}"
            config, column, label = CONFIGS.get(r["model"]), r["model"], r.get("label")
            if config is not None and config.pair:
                column, label, size = f"{config.family}_pair", pair_label(r["model"]), f"s{config.stage}"
            elif config is not None:  # sizes numbered so that tables list them small to large
                size = r["model"].split("_", 1)[1]
                column, label = config.family, f"{SIZES.index(size) + 1}: {size}"
            if config is not None:
                shared = f"{size}-{shared}"
            view.append({**r, "backend": f"{column} {r['backend']}", "case_key": shared, "model": None,
                         "label": label})
    # Tables take their columns in row order: NA families first, a family's backends in run order.
    first_seen = {b: i for i, b in enumerate(dict.fromkeys(r.get("backend") for r in rows))}

    def column_order(row: dict) -> tuple:
        if row.get("op") != "model":
            return (0, 0, 0)
        family, backend = row["backend"].split(" ", 1)
        return (1, _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER),
                first_seen.get(backend, 0))

    view.sort(key=column_order)
    columns = list(dict.fromkeys(r["backend"] for r in view))
    base = next((c for c in columns if baseline and c.endswith(f" {baseline}")), baseline)
    return view, base


def _scaled(value: float, units) -> str:
    """`value` in the largest unit of `units` ((name, scale), descending) it reaches."""
    for unit, scale in units[:-1]:
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    unit, scale = units[-1]
    return f"{value / scale:.3g} {unit}"


def format_seconds(seconds: float) -> str:
    return _scaled(seconds, (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)))


def format_duration(seconds: float) -> str:
    """A span of wall time a person plans around: seconds below a minute, then minutes, then hours."""
    if seconds < 60:
        return format_seconds(seconds)
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


METRIC_TITLES = {"latency": "median latency ±95% CI half-width", "memory": "peak extra memory"}
# metric -> the row's field and its units, largest first, in that field's own unit
_UNITS = {"latency": ("latency_ms_median", (("s", 1e3), ("ms", 1.0), ("us", 1e-3))),
          "memory": ("peak_memory_bytes", (("GiB", 2.0 ** 30), ("MiB", 2.0 ** 20), ("KiB", 2.0 ** 10), ("B", 1.0)))}


def table_unit(rows: list[dict], metric: str) -> tuple[str, float]:
    """One unit for a whole table: the largest its median value reaches at least 1 of."""
    field, units = _UNITS[metric]
    values = sorted(r[field] for r in rows if r["status"] in ("ok", "timeout") and r.get(field))
    if not values:
        return units[1]
    typical = values[len(values) // 2]
    return next(((name, scale) for name, scale in units if typical >= scale), units[-1])


def number(value: float) -> str:
    """Three significant digits, without an exponent: 0.829, 4.75, 23.0, 448."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{2 if value >= 1 else 3}f}" if value < 10 else f"{value:.1f}"


def cell(row: dict | None, metric: str = "latency", scale: float = 1.0) -> str:
    """One line: the median in the table's unit and its 95% CI half-width, or why there is none."""
    if row is None:
        return "[dim]-[/]"
    status = row["status"]
    if status == "skipped":
        return "[dim]skipped[/]"
    if status in ("error", "oom", "crashed"):
        return f"[red]{status}[/]"
    if status == "timeout" and "latency_ms_median" not in row:  # killed with its worker
        return "[yellow]timeout[/]"
    if metric == "memory":
        value = row.get("peak_memory_bytes")
        text = "-" if value is None else number(value / scale)
    else:
        median = row["latency_ms_median"]
        half = (row["latency_ms_ci_high"] - row["latency_ms_ci_low"]) / 2 / median
        text = f"{number(median / scale)} ±{100 * half:.0f}%"
        if status == "timeout":
            text = f"[yellow]{number(median / scale)} 1 call[/]"
        elif single_sample(row):
            text = f"[yellow]{number(median / scale)} 1 sample[/]"
    if row.get("check") == "fail":
        text = f"[bold red]WRONG[/] {text}"
    return text


def _table(title: str, columns: list[tuple[str, str]], backends: list[str], unit: str) -> Table:
    # at least as wide as its title, which would otherwise wrap over a narrow table
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  min_width=len(title))
    for _, name in columns:
        table.add_column(name, no_wrap=True)
    for backend in backends:
        table.add_column(f"{backend}\n{unit}", justify="right", no_wrap=True)
    return table


def results_tables(rows: list[dict], backends: list[str], title: str, metric: str = "latency",
                   width: int | None = None) -> list[Table]:
    """Backends side by side per case, rows in case order, one line per cell, the unit in the
    headers. Wider than `width` columns, the backends go into as many tables as it takes, each
    with the case columns, so that no cell wraps."""
    from rich.measure import Measurement

    columns = case_columns(rows)
    unit, scale = table_unit(rows, metric)
    by_case: dict[str, dict[str, dict]] = {}
    for row in sorted(rows, key=case_order):
        by_case.setdefault(row["case_key"], {})[row["backend"]] = row
    lines = [([_axes(next(iter(cells.values())).get(key)) for key, _ in columns],
              {b: cell(cells.get(b), metric, scale) for b in backends}) for cells in by_case.values()]

    def build(names: list[str], part: str) -> Table:
        table = _table(title + part, columns, names, unit)
        for case_cells, backend_cells in lines:
            table.add_row(*case_cells, *[backend_cells[b] for b in names])
        return table

    groups, group = [], []
    for backend in backends:
        trial = build([*group, backend], "")
        if group and width and Measurement.get(out, out.options.update(width=10 ** 4), trial).maximum > width:
            groups.append(group)
            group = []
        group.append(backend)
    groups.append(group)
    if len(groups) == 1:
        return [build(groups[0], "")]
    return [build(names, f" ({i + 1} of {len(groups)}, to fit {width} columns)")
            for i, names in enumerate(groups)]


def baseline_lines(rows: list[dict], backends: list[str], baseline: str) -> list[str]:
    """A line per backend: its geometric-mean latency ratio to the baseline over the cases both
    ran, the 95% CI, and the cases it is faster, slower, or not significantly different in."""
    from natbench.compare import compare_backends

    others = [b for b in backends if b != baseline]
    if not others or not any(r["backend"] == baseline for r in rows):
        return []
    width = max(map(len, others))
    lines = [f"against {baseline}: time ratio, geometric mean over the cases both ran [95% CI]"]
    for comparison in compare_backends(rows, baseline, others):
        s = comparison.summary
        name = comparison.b_label.ljust(width)
        if not s.n:
            lines.append(f"  {name}  no case ran on both ({s.unknown} unknown)")
            continue
        ratio = f"{s.geomean:.2f}x [{s.geomean_low:.2f}, {s.geomean_high:.2f}]"
        lines.append(f"  {name}  {ratio:<23}  faster {s.wins}, slower {s.losses}, not significant {s.ties}"
                     + (f", unknown {s.unknown}" if s.unknown else ""))
    return lines


def skip_reasons(rows: list[dict]) -> list[str]:
    """One line per distinct (backend, reason) of skipped, failed or flagged rows."""
    seen = {}
    for row in rows:
        if row["status"] != "ok" or row.get("check") == "fail":
            reason = row.get("reason") or f"max abs error {row.get('max_abs_error'):.3g} > " \
                                           f"tolerance {row.get('tolerance'):.3g}"
            seen.setdefault((row["backend"], row["status"], reason), 0)
            seen[(row["backend"], row["status"], reason)] += 1
    return [f"{backend} {status} x{count}: {reason}" for (backend, status, reason), count in seen.items()]


def single_sample_warning(rows: list[dict]) -> str | None:
    """One line on the rows whose time budget held a single call, with the remedy."""
    single = [r for r in rows if r["status"] == "ok" and single_sample(r)]
    if not single:
        return None
    slowest = max(r["latency_ms_median"] for r in single) * 1e-3
    return (f"{len(single)} rows have a single sample and so no CI (their calls take up to "
            f"{format_seconds(slowest)}): raise --max-time to at least {3 * slowest:.2g} s for two "
            f"or more rounds.")


def noise_warning(rows: list[dict], limit: float = 0.10) -> str | None:
    """One line on the rows whose IQR is a large share of their median, with a remedy."""
    noisy = [(r["latency_ms_iqr"] / r["latency_ms_median"], r) for r in rows
             if r["status"] == "ok" and r["latency_ms_median"] > 0
             and r["latency_ms_iqr"] > limit * r["latency_ms_median"]]
    if not noisy:
        return None
    share, worst = max(noisy, key=lambda pair: pair[0])
    return (f"{len(noisy)} of {len(rows)} rows have an IQR over {100 * limit:.0f}% of their median "
            f"(worst: {worst['backend']} on {worst['case_key']}, {100 * share:.0f}%); the machine "
            f"is noisy (rows pool their rounds: see round_medians_ms in the results): close "
            f"other work; more --rounds or a larger --max-time narrow the CIs.")


def _round_factors(rows: list[dict]) -> dict[str, list[float]]:
    """Per backend with 4 or more rows of the run's full round count (6 or more), each round's
    factor: the median over those rows of round median / row median."""
    full = max((r.get("rounds") or 0 for r in rows if r["status"] == "ok"), default=0)
    if full < 6:
        return {}
    per: dict[str, list[list[float]]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("rounds") == full and r["latency_ms_median"] > 0:
            per.setdefault(r["backend"], []).append(
                [m / r["latency_ms_median"] for m in r["round_medians_ms"]])
    return {b: [median(v[i] for v in vs) for i in range(full)] for b, vs in per.items() if len(vs) >= 4}


def step_warning(rows: list[dict], least: float = 0.10) -> str | None:
    """One line per backend whose rows all changed level at one round while the other backends
    held: its round factors, each divided by the other backends' median factor of that round,
    split at one round into two runs of 2 or more that differ by `least` or more and each
    spread under a third of that, its own factors differing by `least` or more there too.
    Such a step is a state of that backend in this process, which the next run may not share.
    The spread bound keeps host noise out: noise moves a backend's factors by as much as
    0.85-1.40 from round to round, but not as two tight runs (docs/reproducibility.md)."""
    factors = _round_factors(rows)
    lines = []
    for backend, own in factors.items():
        others = [f for b, f in factors.items() if b != backend]
        if not others:
            continue
        relative = [own[i] / median(f[i] for f in others) for i in range(len(own))]
        for cut in range(2, len(relative) - 1):
            before, after = relative[:cut], relative[cut:]
            step = abs(median(before) - median(after))
            spread = max(max(before) - min(before), max(after) - min(after))
            # its own factors step too: with few backends, one that stepped moves the others' median
            own_step = abs(median(own[:cut]) - median(own[cut:]))
            if step >= least and spread <= step / 3 and own_step >= least:
                held = [f[i] for f in others for i in range(len(own))]
                lines.append(
                    f"{backend} changed level between rounds {cut - 1} and {cut}: its rows ran "
                    f"{median(own[:cut]):.2f}x then {median(own[cut:]):.2f}x of their medians, "
                    f"while the other backends held ({min(held):.2f}-{max(held):.2f}x a round): a "
                    f"change only {backend} felt (a state of its process, or of the machine that "
                    f"only it is sensitive to); its CIs span both levels and another run may see "
                    f"either (docs/reproducibility.md).")
                break
    return "\n".join(lines) or None


def load_warning(rows: list[dict], limit: float = 0.05) -> str | None:
    """One line when, while the rows were measured, other processes (or the hypervisor, taking
    CPU time from this VM) used more than `limit` of one CPU: the machine was not idle."""
    measured = [r for r in rows if "other_cpu_s" in r and r.get("measure_s")]
    seconds = sum(r["measure_s"] for r in measured)
    if not seconds:
        return None
    other = sum(r["other_cpu_s"] for r in measured)
    stolen = sum(r["stolen_cpu_s"] for r in measured)
    if other <= limit * seconds and stolen <= limit * seconds:
        return None
    return (f"the machine was not idle: while the rows were measured ({seconds:.0f} s), other "
            f"processes used {other:.1f} CPU-seconds ({100 * other / seconds:.0f}% of one CPU) and "
            f"the hypervisor took {stolen:.1f} s (other_cpu_s, stolen_cpu_s in the results); stop "
            f"other work and measure again.")


def key_value_table(values: dict, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    return table


# ---- comparisons (natbench compare, gate and report share these texts) ----

_VERDICT_STYLE = {"faster": "green", "slower": "red", "no significant difference": "dim", "unknown": "yellow"}


def threads_text(threads: int) -> str:
    return f"{threads} CPU thread{'s' * (threads != 1)}"


def latency_text(row: dict | None) -> str:
    """Median and the 95% CI as [-low%, +high%] around it."""
    if row is None or row["status"] != "ok" or row.get("check") == "fail":
        return "-"
    median = row["latency_ms_median"]
    if single_sample(row):
        return f"{format_seconds(median * 1e-3)} (1 sample, no CI)"
    low = 100 * (1 - row["latency_ms_ci_low"] / median)
    high = 100 * (row["latency_ms_ci_high"] / median - 1)
    return f"{format_seconds(median * 1e-3)} -{low:.0f}/+{high:.0f}%"


def ratio_text(pair) -> str:
    if pair.ratio is None:
        return "-"
    return f"{pair.ratio:.3f} [{pair.ratio_low:.3f}, {pair.ratio_high:.3f}]"


def case_name(row: dict, columns: list[tuple[str, str]]) -> str:
    """A case in the words of the columns that vary, e.g. `map 56, K 7`."""
    return row.get("label") or ", ".join(f"{title} {_axes(row.get(key))}" for key, title in columns)


def _tflops(row: dict | None) -> str:
    return "-" if row is None or row.get("tflops") is None or row["status"] != "ok" else f"{row['tflops']:.3g}"


def comparison_cells(pair) -> list[str]:
    """Plain-text cells of one compared case: A, B, B/A [CI], memory B/A, TFLOP/s A and B."""
    memory = "-" if pair.memory_ratio is None else f"{pair.memory_ratio:.2f}x"
    return [latency_text(pair.a), latency_text(pair.b), ratio_text(pair), memory, _tflops(pair.a),
            _tflops(pair.b)]


def _case_cells(comparison) -> tuple[list[tuple[str, str]], list[list[str]]]:
    rows = [p.any_row for p in comparison.pairs]
    columns = case_columns(rows)
    return columns, [[_axes(p.any_row.get(key)) for key, _ in columns] for p in comparison.pairs]


def verdict_text(pair) -> str:
    return pair.verdict if pair.reason is None else f"{pair.verdict}: {pair.reason}"


def summary_text(comparison) -> str:
    s = comparison.summary
    if not s.n:
        return f"{comparison.b_label} vs {comparison.a_label}: no case ran on both sides ({s.unknown} unknown)."
    worst = s.worst
    columns = case_columns([p.any_row for p in comparison.pairs])
    return (f"{comparison.b_label} / {comparison.a_label}: geometric mean {s.geomean:.3f}x "
            f"[{s.geomean_low:.3f}, {s.geomean_high:.3f}] over {s.n} cases; {s.wins} faster, "
            f"{s.losses} slower, {s.ties} no significant difference, {s.unknown} unknown; worst "
            f"{worst.ratio:.3f}x on {case_name(worst.any_row, columns)}{drift_text(comparison.drift)}.")


def chance_text(calls) -> str:
    """One line on how many rows of two runs were called faster or slower, against chance."""
    if not calls.judged:
        return "verdicts: no row was judged in both runs."
    text = (f"verdicts: {calls.called} of {calls.judged} rows called faster or slower; "
            f"{calls.expected:.1f} expected by chance alone if nothing changed (alpha 0.05).")
    if calls.too_many:
        text += (f" That is more than chance explains (p = {calls.p_excess:.2g}): if the two runs are "
                 f"of the same code, this machine moves between runs more than their rounds show; "
                 f"read their ratios within one run (`natbench compare A B`), or gate with a threshold.")
    return text


def drift_text(drift) -> str:
    return "" if drift is None else f" ({drift.text()})"


def comparison_table(comparison) -> Table:
    """Per case: both medians with 95% CIs, B/A with its CI, memory B/A, TFLOP/s, verdict."""
    columns, cells = _case_cells(comparison)
    a, b = comparison.a_label, comparison.b_label
    table = Table(title=f"{b} against {a} (ratio B/A < 1: {b} is faster)", title_justify="left")
    for _, title in columns:
        table.add_column(title)
    for title in (f"A: {a}", f"B: {b}", "B/A [95% CI]", "mem B/A", "TFLOP/s A", "TFLOP/s B", "verdict"):
        table.add_column(title, justify="right" if title != "verdict" else "left")
    for pair, case_cells in zip(comparison.pairs, cells):
        style = _VERDICT_STYLE[pair.verdict]
        table.add_row(*case_cells, *comparison_cells(pair), f"[{style}]{verdict_text(pair)}[/]")
    return table


def comparison_markdown(comparison) -> str:
    """The comparison table and summary as GitHub-flavoured Markdown, for a pull request."""
    columns, cells = _case_cells(comparison)
    a, b = comparison.a_label, comparison.b_label
    head = [title for _, title in columns] + [f"A: {a}", f"B: {b}", "B/A [95% CI]", "memory B/A",
                                              "TFLOP/s A", "TFLOP/s B", "verdict"]
    lines = [f"### {b} against {a}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for pair, case_cells in zip(comparison.pairs, cells):
        values = [*case_cells, *comparison_cells(pair), verdict_text(pair).replace("|", "\\|")]
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", f"**Summary:** {summary_text(comparison)}", ""]
    return "\n".join(lines)


# ---- natbench profile ----

def profile_table(breakdown, top: int = 15) -> Table:
    """Top ops and kernels by self time per step, with their spread across the active steps."""
    step = sum(breakdown.step_s) / len(breakdown.step_s)
    threads = f", {threads_text(breakdown.threads)}" if breakdown.device == "cpu" else ""
    table = Table(title=f"{breakdown.backend} on {breakdown.case_key}: {breakdown.steps} active steps, "
                        f"{format_seconds(step)} per step{threads}", title_justify="left")
    table.caption = "per active step: calls, inclusive time, self time (min-max over steps), % of the step, FLOPs"
    table.add_column("op / kernel", min_width=24, overflow="fold")
    table.add_column("dev")
    for title in ("calls", "total", "self (min-max)", "%", "FLOP"):
        table.add_column(title, justify="right")
    for op in breakdown.ops[:top]:
        flops = "-" if op.flops_per_step is None else f"{op.flops_per_step:.3g}"
        table.add_row(op.name, op.device, f"{op.calls_per_step:g}", format_seconds(op.total_s_per_step),
                      f"{format_seconds(op.self_s_per_step)}\n({format_seconds(op.self_s_min)}-"
                      f"{format_seconds(op.self_s_max)})", f"{100 * op.share_of_step:.1f}",
                      flops)
    rest = breakdown.ops[top:]
    if rest:
        table.add_row(f"{len(rest)} more", "", "", "", format_seconds(sum(o.self_s_per_step for o in rest)),
                      f"{100 * sum(o.share_of_step for o in rest):.1f}", "")
    return table


def profile_reconciliation(breakdown) -> str:
    """How the breakdown adds up: self times against the step, the step against natbench's timing."""
    step = sum(breakdown.step_s) / len(breakdown.step_s)
    call = sum(breakdown.call_s) / len(breakdown.call_s)
    text = (f"self times sum to {format_seconds(breakdown.self_sum_s)} per step "
            f"({100 * breakdown.self_sum_s / step:.0f}% of the {format_seconds(step)} step); the "
            f"natbench::{breakdown.backend} range takes {format_seconds(call)}")
    if breakdown.measured_s:
        gap = 100 * (call / breakdown.measured_s - 1)
        text += (f"; natbench's own timing of the same call (no profiler) is "
                 f"{format_seconds(breakdown.measured_s)}: the profiled call is {gap:+.0f}% off it")
    return text + "."


# ---- natbench gate ----

_OUTCOME_STYLE = {"regression": "bold red", "unconfirmed": "magenta", "improvement": "green",
                  "new": "yellow", "unknown": "yellow", "unchanged": "dim"}


def _finding_values(finding) -> list[str]:
    def value(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    change = "-" if finding.change is None else f"{finding.change:+.1%}"
    return [finding.backend, finding.case_key, finding.metric, finding.outcome, value(finding.baseline),
            value(finding.current), change, finding.message]


def gate_verdict(result) -> str:
    r, i, u = len(result.regressions), len(result.improvements), len(result.unconfirmed)
    checked = len({(f.case_key, f.backend) for f in result.findings})
    head = "FAIL" if r else "PASS"
    unconfirmed = f", {u} unconfirmed (not slower when measured again)" if u else ""
    return (f"gate {head}: {r} regressions{unconfirmed}, {i} improvements over {checked} rows of "
            f"{result.current_path} against {result.baseline_path}"
            f"{' (latency normalized by each run matmul calibration)' if result.normalized else ''}"
            f"; {gate_drift_text(result.drifts)}.")


def gate_drift_text(drifts: dict) -> str:
    """The drift each backend's rows were divided by, in a few words."""
    if not drifts:
        return "no drift correction"
    factors = sorted(d.factor for d in drifts.values())
    span = f"{factors[0]:.3f}x" if factors[0] == factors[-1] else f"{factors[0]:.3f}-{factors[-1]:.3f}x"
    sources = ", ".join(sorted({"the other backends" if d.source == "other backends" else d.source
                                for d in drifts.values()}))
    bounded = [b for b, d in drifts.items() if d.unbounded is not None]
    bound = f"; bounded by the calibration for {', '.join(bounded)}" if bounded else ""
    return f"drift {span} divided out (from {sources}{bound})"


def gate_table(result) -> Table:
    """What changed: regressions first, then improvements and new rows."""
    table = Table(title="natbench gate: what changed", title_justify="left")
    for title in ("backend", "case", "metric", "outcome", "baseline", "current", "change", "why"):
        table.add_column(title, overflow="fold")
    order = {"regression": 0, "unconfirmed": 1, "improvement": 2, "new": 3}
    for finding in sorted(result.changed, key=lambda f: order.get(f.outcome, 3)):
        values = _finding_values(finding)
        values[3] = f"[{_OUTCOME_STYLE[finding.outcome]}]{finding.outcome}[/]"
        table.add_row(*values)
    if not result.changed:
        table.add_row("-", "-", "-", "[dim]nothing changed beyond the thresholds[/]", "", "", "", "")
    return table


def gate_markdown(result) -> str:
    lines = ["## natbench gate", "", gate_verdict(result), ""]
    if result.changed:
        lines += ["| backend | case | metric | outcome | baseline | current | change | why |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in _finding_values(f)) + " |"
                  for f in result.changed]
    return "\n".join(lines) + "\n"


def plan_report(sink: Sink, plan, suite: str, device: str, part: dict | None = None,
                extra: dict | None = None) -> None:
    """`--dry-run`: a table of the plan's pairs (what runs, what is skipped and why, expected call
    and cost, shard), then the expected total with its fixed parts; JSON with --json (with
    `extra`'s fields, which the caller also says in words)."""
    shard_of = {}
    if part is not None:
        shard_of = {key: i + 1 for i, keys in enumerate(part["split"]) for key in keys}
    records = [{**p.point.case.to_record(), "label": p.point.label} for p in plan.pairs]
    columns = case_columns(records) if records else []
    measured = [p for p in plan.pairs if p.skip is None]
    if sink.json_mode:
        sink.json({"suite": suite, "device": device, "costs_from": plan.costs_from,
                   "expected_s": plan.total_s, "fixed_s": plan.fixed_parts,
                   "pairs": [{"case_key": p.point.case.key, "label": p.point.label, "backend": p.backend,
                              "skip": p.skip, "call_s": p.call_s, "expected_s": p.cost_s,
                              "call_from": p.source, "shard": shard_of.get(p.point.case.key)}
                             for p in plan.pairs],
                   "shards": part["record"] if part else None, **(extra or {})})
        return
    table = Table(title=f"plan: {suite} on {device} (nothing measured)", title_justify="left")
    for column in ("case", "backend", "runs", "call", "expected", *(["shard"] if part else [])):
        table.add_column(column)
    for pair, record in zip(plan.pairs, records):
        runs = "[green]yes[/]" if pair.skip is None else f"[yellow]skip[/]: {pair.skip}"
        call = "" if pair.skip else f"{format_seconds(pair.call_s)} ({pair.source})"
        table.add_row(case_name(record, columns), pair.backend, runs, call,
                      "" if pair.skip else format_duration(pair.cost_s),
                      *([str(shard_of.get(pair.point.case.key, ""))] if part else []))
    sink.table(table)
    fixed = ", ".join(f"{name} {format_duration(s)}" for name, s in plan.fixed_parts.items() if s)
    sink.info(f"{len(measured)} pairs to measure, {len(plan.pairs) - len(measured)} to skip; expected "
              f"{format_duration(plan.total_s)} in all ({fixed} of it fixed). Calls from: {plan.costs_from} "
              f"(measured: a row of that file; rate: the backend's FLOP/s there; stated: an assumed rate).")
    if part is not None:
        record = part["record"]
        loads = ", ".join(f"{i + 1}: {format_duration(s)}" for i, s in enumerate(record["expected_s"]))
        own = [p for p in plan.pairs if shard_of.get(p.point.case.key) == record["index"]]
        sink.info(f"shards (whole cases, split by {record['split_by']}): expected pair time {loads}. This run "
                  f"is shard {record['index']}/{record['count']}: {sum(p.skip is None for p in own)} pairs to "
                  f"measure, expected {format_duration(plan.fixed_s + sum(p.cost_s for p in own))} with the "
                  f"fixed parts.")


@contextmanager
def launch_progress(sink: Sink, title: str):
    """Yields update(done, total): a bar of the pairs finished over every job of a launch."""
    if sink.quiet or sink.json_mode:
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(f"{title}: pairs finished", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update
