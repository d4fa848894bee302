"""The run's warnings under the results table: what they count and the remedy they name."""

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
