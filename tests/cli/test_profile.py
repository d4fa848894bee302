"""natbench profile: trace files that parse, a breakdown of the backend's ops, clear refusals."""

import json

import pytest

CASE = ["--set", "resolution=14", "--set", "kernel_size=3", "--device", "cpu"]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One profile of the torch backend's forward+backward, shared by the tests."""
    import sys

    from natbench.cli import main

    out = tmp_path_factory.mktemp("profile")
    argv = sys.argv
    sys.argv = ["natbench", "profile", "--backend", "torch", "--pass", "fwdbwd", "--steps", "3",
                "--json", "--out", str(out), *CASE]
    try:
        with pytest.raises(SystemExit) as done:
            main()
    finally:
        sys.argv = argv
    assert done.value.code == 0
    return out


def test_trace_files_exist_and_parse(profiled):
    trace = json.loads((profiled / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert "natbench::torch" in names and any(n and n.startswith("ProfilerStep") for n in names)
    [tb_trace] = (profiled / "tensorboard").glob("natbench.*.pt.trace.json")
    assert json.loads(tb_trace.read_text())["traceEvents"]


def test_tensorboard_plugin_loads_the_trace(profiled, tmp_path):
    data = pytest.importorskip("torch_tb_profiler.profiler.data",
                               reason="torch-tb-profiler is not installed (the tb extra)")
    [tb_trace] = (profiled / "tensorboard").glob("natbench.*.pt.trace.json")
    run = data.RunProfileData.parse("natbench", None, str(tb_trace), str(tmp_path))
    assert len(run.steps_names) == 3
    assert "aten::bmm" in {op.name for op in run.op_list_groupby_name}


def test_breakdown_lists_the_backends_ops_and_reconciles(profiled):
    breakdown = json.loads((profiled / "breakdown.json").read_text())
    assert breakdown["steps"] == 3 and len(breakdown["step_s"]) == 3
    assert breakdown["threads"] == 1  # natbench's default, as in `run`
    names = {op["name"] for op in breakdown["ops"]}
    assert {"aten::bmm", "natbench::torch"} <= names
    assert any("Backward" in name for name in names)  # the backward ran inside the steps
    step = sum(breakdown["step_s"]) / 3
    assert 0.8 * step <= breakdown["self_sum_s"] <= 1.05 * step
    assert breakdown["measured_s"] > 0
    call = next(op for op in breakdown["ops"] if op["name"] == "natbench::torch")
    assert call["flops_per_step"] == 3 * 2 * 1 * 4 * 196 * 9 * 64  # fwdbwd = 3x forward


def test_the_table_is_printed(cli, tmp_path):
    code, stdout, stderr = cli("profile", "--backend", "torch", "--steps", "2", "--threads", "2",
                               "--out", tmp_path, *CASE)
    assert code == 0, stderr
    assert "2 CPU threads" in stdout and "aten::bmm" in stdout and "natbench's own timing" in stdout and "Perfetto" in stdout


@pytest.mark.parametrize("args, words", [
    (["--backend", "flex", "--pass", "fwdbwd"], "no backward pass on cpu"),
    (["--backend", "torch", "--set", "kernel_size=3,5"], "one case"),
    (["--backend", "torch", "--set", "kernel_size=29"], "kernel_size 29"),
    (["--backend", "nosuch"], "nosuch"),
])
def test_a_case_that_cannot_run_exits_2_with_the_reason(cli, tmp_path, args, words):
    code, _, stderr = cli("profile", *args, "--out", tmp_path, "--set", "resolution=14", "--device", "cpu")
    assert code == 2 and words in stderr
