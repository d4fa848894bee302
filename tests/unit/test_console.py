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
