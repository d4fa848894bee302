"""Results files: round trip, a killed run's torn line, resume, and refusals."""

import json

import pytest

from natbench import store
from natbench.errors import ResultsError

HEADER = {"env": {"device_kind": "cpu", "gpu_name": None, "cpu_model": "X", "torch_version": "2.13",
                  "cuda_version": None}, "suite": "smoke"}


def _row(key, backend="torch"):
    return {"record": "row", "case_key": key, "backend": backend, "status": "ok"}


def test_round_trip_keeps_header_calibration_and_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = store.ResultsWriter(path, HEADER)
    writer.write({"record": "calibration", "device": "cpu", "dtype": "float32",
                  "matmul_flops_per_s": 1e11})
    writer.write(_row("a"))
    writer.close()
    results = store.load(path)
    assert results.header["schema"] == store.SCHEMA_VERSION and results.header["suite"] == "smoke"
    assert results.rows == [_row("a")]
    assert results.calibration("cpu", "float32")["matmul_flops_per_s"] == 1e11


def test_a_killed_runs_torn_line_is_dropped_and_resume_continues(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = store.ResultsWriter(path, HEADER)
    writer.write(_row("a"))
    writer.close()
    with path.open("a") as f:
        f.write('{"record": "row", "case_key": "b", "back')  # killed mid-write
    results = store.load(path)
    assert results.torn_lines == 1 and [r["case_key"] for r in results.rows] == ["a"]
    writer = store.ResultsWriter(path, HEADER, resume=True)
    assert writer.done == {("a", "torch")}
    writer.write(_row("b"))
    writer.close()
    assert [r["case_key"] for r in store.load(path).rows] == ["a", "b"]
    assert store.load(path).torn_lines == 0


def test_a_resume_leaves_crashed_pairs_alone_unless_asked_and_a_new_row_supersedes(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = store.ResultsWriter(path, HEADER)
    writer.write({"record": "round", "case_key": "a", "backend": "torch", "round": 0, "status": "crashed"})
    writer.write({**_row("a"), "status": "crashed", "reason": "the worker died: signal 11 (SIGSEGV)"})
    writer.write(_row("b"))
    writer.close()
    assert store.ResultsWriter(path, HEADER, resume=True).done == {("a", "torch"), ("b", "torch")}
    retry = store.ResultsWriter(path, HEADER, resume=True, retry_crashed=True)
    assert retry.done == {("b", "torch")} and retry.rounds == {}  # measured afresh
    retry.write(_row("a"))
    retry.close()
    rows = store.load(path).rows
    assert [(r["case_key"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok")]


def test_existing_file_needs_resume_and_a_matching_setup(tmp_path):
    path = tmp_path / "r.jsonl"
    store.ResultsWriter(path, HEADER).close()
    with pytest.raises(ResultsError, match="already exists; pass --resume"):
        store.ResultsWriter(path, HEADER)
    other = {**HEADER, "env": {**HEADER["env"], "torch_version": "2.11"}}
    with pytest.raises(ResultsError, match="torch_version: '2.13' != '2.11'"):
        store.ResultsWriter(path, other, resume=True)


@pytest.mark.parametrize("content,message", [
    ('{"record": "row"}\n', "not a natbench header"),
    (json.dumps({"record": "header", "schema": 99}) + "\n", "schema version 99 is newer"),
    ('{"record": "header", "schema": 1}\nnot json\n{"record": "row"}\n', r"r.jsonl:2: not a JSON record"),
])
def test_unreadable_files_are_refused_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "r.jsonl"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        store.load(path)


def test_every_schema_version_on_file_still_loads():
    """One real results file per schema version lives in tests/data/."""
    from pathlib import Path

    files = sorted(Path(__file__).parent.parent.joinpath("data").glob("results-v*.jsonl"))
    assert [f.name for f in files][-1] == f"results-v{store.SCHEMA_VERSION}.jsonl"
    for path in files:
        results = store.load(path)
        assert results.header["env"]["torch_version"] and results.rows
        assert all(r["status"] in ("ok", "skipped", "error", "oom", "timeout") for r in results.rows)


def test_merge_rounds_estimates_from_the_round_medians():
    import math

    from scipy.stats import t

    from natbench.case import Case
    from natbench.runner import RunContext, merge_rounds
    from natbench.timing import TimingPolicy

    case = Case.build(2, 1, 1, 8, 8, 3)
    first = {"record": "round", "round": 0, "backend": "torch", "op": "na", **case.to_record(),
             "case_key": case.key, "status": "ok", "reason": None, "stop": "converged",
             "samples_s": [1.0, 1.01, 0.99, 1.0, 1.02, 0.98]}
    later = [{**first, "round": 1, "samples_s": [1.2, 1.21, 1.19, 1.2, 1.22, 1.18]},
             {**first, "round": 2, "samples_s": [1.1, 1.11, 1.09, 1.1, 1.12, 1.08]}]
    row = merge_rounds([first, *later], RunContext(TimingPolicy()))
    assert row["record"] == "row" and row["samples"] == 18 and row["rounds"] == 3
    assert row["round_medians_ms"] == [1000.0, 1200.0, 1100.0]
    assert row["latency_ms_median"] == 1100.0  # the median round
    # a drifting machine: three rounds give Student's t on the log round medians, far wider than
    # the CI of the 18 pooled samples would be
    logs = [math.log(m) for m in (1.0, 1.2, 1.1)]
    mean = sum(logs) / 3
    half = t.ppf(0.975, 2) * math.sqrt(sum((x - mean) ** 2 for x in logs) / 2) / math.sqrt(3)
    assert row["ci_method"] == "rounds/log-t"
    assert row["latency_ms_ci_low"] == pytest.approx(math.exp(mean - half) * 1e3)
    assert row["latency_ms_ci_high"] == pytest.approx(math.exp(mean + half) * 1e3)
    assert row["latency_ms_ci_low"] < 1000 and row["latency_ms_ci_high"] > 1200
    # seven rounds: the order statistics of their medians, here their full range (98.4%)
    seven = [{**first, "round": i, "samples_s": [1.0 + 0.01 * i] * 6} for i in range(7)]
    row = merge_rounds(seven, RunContext(TimingPolicy()))
    assert row["ci_method"] == "rounds/order-statistics" and row["rounds"] == 7
    assert (row["latency_ms_ci_low"], row["latency_ms_median"], row["latency_ms_ci_high"]) == \
        pytest.approx((1000.0, 1030.0, 1060.0))
    failed = merge_rounds([first, {**later[0], "status": "error", "reason": "boom"}], RunContext(TimingPolicy()))
    assert failed["status"] == "error" and failed["reason"] == "boom"
    # a noisy round that the sampler kept sampling (ten times the samples) does not outvote two
    # quiet ones: the median sits in the quiet rounds, every raw sample is kept
    noisy = {**first, "samples_s": [3.0 + 0.01 * (i % 7) for i in range(60)]}
    row = merge_rounds([noisy, *later], RunContext(TimingPolicy()))
    assert row["samples"] == 72 and len(row["samples_s"]) == 72
    assert 1.1e3 <= row["latency_ms_median"] <= 1.23e3
    assert row["latency_ms_p10"] < 1.2e3 and row["latency_ms_p90"] >= 3e3  # the pooled spread
