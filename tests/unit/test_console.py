"""The run's warnings under the results table: what they count and the remedy they name."""

import pytest

from natbench.console import noise_warning, single_sample_warning


def _row(median_ms, iqr_ms, ci_method="rounds/order-statistics", status="ok"):
    return {"status": status, "backend": "torch", "case_key": f"k{median_ms}",
            "latency_ms_median": median_ms, "latency_ms_iqr": iqr_ms, "ci_method": ci_method}


def test_noise_warning_counts_rows_whose_iqr_is_over_a_tenth_of_their_median():
    rows = [_row(10.0, 0.5), _row(10.0, 2.0), _row(20.0, 10.0), _row(5.0, 5.0, status="skipped")]
    text = noise_warning(rows)
    assert text.startswith("2 of 4 rows have an IQR over 10%") and "k20.0, 50%" in text
    assert "--rounds" in text
    assert noise_warning([_row(10.0, 0.5)]) is None


def test_single_sample_warning_names_a_budget_that_gives_rounds():
    rows = [_row(500.0, 0.0, "samples/single"), _row(400.0, 0.0, "samples/single"), _row(1.0, 0.01)]
    text = single_sample_warning(rows)
    assert text.startswith("2 rows have a single sample and so no CI") and "--max-time to at least 1.5 s" in text
    assert single_sample_warning([_row(1.0, 0.01)]) is None


def test_load_warning_says_when_other_work_shared_the_machine():
    from natbench.console import load_warning

    idle = [{"measure_s": 10.0, "other_cpu_s": 0.1, "stolen_cpu_s": 0.0}] * 3
    assert load_warning(idle) is None
    assert load_warning([{"measure_s": 10.0}]) is None  # files from before the fields
    busy = idle + [{"measure_s": 10.0, "other_cpu_s": 8.0, "stolen_cpu_s": 0.5}]
    text = load_warning(busy)
    assert "not idle" in text and "8.3 CPU-seconds (21% of one CPU)" in text and "took 0.5 s" in text
    assert "took 4.0 s" in load_warning(idle + [{"measure_s": 10.0, "other_cpu_s": 0.0, "stolen_cpu_s": 4.0}])


def _rounds_row(backend, case, factors, median_ms=10.0):
    return {"status": "ok", "backend": backend, "case_key": case, "rounds": len(factors),
            "latency_ms_median": median_ms, "round_medians_ms": [f * median_ms for f in factors]}


def test_step_warning_names_a_backend_that_changed_level_while_the_others_held():
    from natbench.console import step_warning

    step = [0.79, 0.79, 0.78, 1.0, 1.0, 1.01, 1.01, 1.01]
    flat = [1.0, 0.99, 1.01, 1.0, 1.0, 1.02, 0.99, 1.0]
    rows = ([_rounds_row("natten-unfused", f"k{k}", step) for k in range(5)]
            + [_rounds_row(b, f"k{k}", flat) for b in ("natten", "swin") for k in range(5)])
    text = step_warning(rows)
    assert text.startswith("natten-unfused changed level between rounds 2 and 3")
    assert "0.79x then 1.01x" in text and "(0.99-1.02x a round)" in text
    assert "\n" not in text  # natten and swin held, though natten-unfused moves their peers' median


def test_step_warning_is_silent_when_the_machine_moved_everything_or_rounds_are_just_noisy():
    from natbench.console import step_warning

    step = [0.79, 0.79, 0.78, 1.0, 1.0, 1.01, 1.01, 1.01]
    alike = [_rounds_row(b, f"k{k}", step) for b in ("natten", "swin", "torch") for k in range(5)]
    assert step_warning(alike) is None  # every backend moved: the machine's state
    noisy = [0.85, 1.2, 0.9, 1.4, 1.0, 0.95, 1.3, 1.0]
    flat = [1.0] * 8
    rows = ([_rounds_row("torch", f"k{k}", noisy) for k in range(5)]
            + [_rounds_row("swin", f"k{k}", flat) for k in range(5)])
    assert step_warning(rows) is None
    few = [_rounds_row("natten-unfused", f"k{k}", step) for k in range(3)]  # under 4 rows
    assert step_warning(few + [_rounds_row("swin", f"k{k}", flat) for k in range(5)]) is None


# ---- the results tables a run ends with ----

KERNELS = (7, 9, 5, 3, 11, 31, 21, 13, 15, 17, 19, 23, 25, 27, 29)  # measuring order, not K order
SUITE = ("natten", "natten-unfused", "torch", "flex", "natten-lib", "swin", "sdpa")


def _kernel_sizes_rows():
    """kernel-sizes as it comes out of a run: 15 kernels x 7 backends, in measuring order, from
    0.3 ms to 30 s, and a few rows that did not run."""
    from tests import synthetic

    rows = []
    for i, k in enumerate(KERNELS):
        for j, name in enumerate(SUITE):
            median = {"natten-lib": 30.0, "sdpa": 0.07}.get(name, 1e-4 * k * (j + 1))
            rows.append(synthetic.row(name, k, median, seed=7 * i + j, memory=(k * k) << 17))
    rows.append(synthetic.row("flex", 33, 1.0, status="skipped"))
    return rows


def _render(tables, width):
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    for table in tables:
        console.print(table)
    return console.export_text()


def test_every_cell_of_kernel_sizes_fits_one_line_of_a_100_column_terminal_in_k_order():
    from natbench.console import results_tables

    rows = _kernel_sizes_rows()
    tables = results_tables(rows, list(SUITE), "kernel-sizes on cpu", "latency", width=100)
    assert len(tables) == 1
    text = _render(tables, 100)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    body = [line for line in lines if line.strip()[:2].strip().isdigit()]
    assert [int(line.split()[1]) for line in body] == [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                                       29, 31, 33]
    assert all(len(line.split()) == 2 + 2 * 7 for line in body[:-1])  # map, K, then value ±CI
    assert "ms" not in "".join(body) and "±" in body[0]
    headers = [line for line in lines if "natten-unfused" in line]
    assert len(headers) == 1 and lines[lines.index(headers[0]) + 1].split() == ["map", "K", *["ms"] * 7]


def test_a_table_too_wide_for_the_terminal_is_split_so_that_no_cell_wraps():
    from natbench.console import results_tables

    rows = _kernel_sizes_rows()
    tables = results_tables(rows, list(SUITE), "kernel-sizes on cpu", "latency", width=60)
    assert len(tables) >= 2 and "to fit 60 columns" in tables[0].title
    text = _render(tables, 60)
    assert max(map(len, text.splitlines())) <= 60
    for name in SUITE:
        assert text.count(name) >= 1  # every backend is in one of the tables


def test_memory_has_its_own_table_with_its_unit_in_the_header():
    from natbench.console import results_tables

    [table] = results_tables(_kernel_sizes_rows(), list(SUITE), "kernel-sizes", "memory", width=200)
    text = _render([table], 200)
    assert "MiB" in text.splitlines()[3] and "MiB" not in "".join(text.splitlines()[5:])


def test_a_run_ends_with_each_backend_against_the_baseline():
    from natbench.console import baseline_lines

    lines = baseline_lines(_kernel_sizes_rows(), list(SUITE), "swin")
    assert lines[0].startswith("against swin: time ratio")
    natten = next(line for line in lines if line.strip().startswith("natten "))
    # natten costs 1/6 of swin's time in every case (1e-4 K x 1 against x 6)
    assert "0.17x" in natten and "faster 15, slower 0, not significant 0" in natten
    assert max(map(len, lines)) <= 100
    assert not any(line.strip().startswith("swin") for line in lines[1:])


def test_the_baseline_is_asked_for_declared_or_a_named_default_never_the_first_backend():
    from natbench.compare import pick_baseline
    from natbench.errors import ResultsError

    backends = ["natten-lib", "natten", "swin", "sdpa"]
    assert pick_baseline(backends, "swin") == ("swin", "the suite's baseline")
    assert pick_baseline(backends, "swin", "natten") == ("natten", "--baseline")
    name, why = pick_baseline(["natten-lib", "natten", "sdpa"], "swin")
    assert name == "sdpa" and "swin did not run" in why
    assert pick_baseline(["natten-lib", "zeta"], None)[0] == "natten-lib"  # by name, not by order
    with pytest.raises(ResultsError, match="--baseline flex: no rows of that backend"):
        pick_baseline(backends, "swin", "flex")
