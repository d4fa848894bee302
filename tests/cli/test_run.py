"""natbench run / verify / list / env / export through the real entry point, exit codes included."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from natbench import store

CASE = ["--suite", "smoke", "--device", "cpu", "--set", "resolution=8", "--set", "kernel_size=3",
        "--pass", "fwd"]
FAST = [*CASE, "--max-time", "0.05"]
BASELINE = str(Path(__file__).resolve().parents[2] / "results" / "baselines" / "smoke-cpu-amd-epyc.jsonl")


@pytest.mark.worker
def test_run_writes_every_row_and_prints_the_table(cli, tmp_path):
    out = tmp_path / "r.jsonl"
    code, stdout, stderr = cli("run", *FAST, "--out", out)
    assert code == 0, stderr
    results = store.load(out)
    assert {r["backend"] for r in results.rows} == {"natten", "torch", "swin", "sdpa"}
    row = next(r for r in results.rows if r["backend"] == "torch")
    required = ["backend", "pass", "rank", "batch", "heads", "head_dim", "resolution",
                "kernel_size", "dilation", "stride", "is_causal", "rpb", "dtype", "device",
                "status", "reason", "samples", "latency_ms_median", "latency_ms_ci_low",
                "latency_ms_ci_high", "peak_memory_bytes", "flops", "tflops", "pct_of_peak",
                "max_abs_error"]
    assert not [k for k in required if k not in row]
    assert row["status"] == "ok" and row["check"] == "pass" and row["samples"] == len(row["samples_s"])
    assert row["latency_ms_ci_low"] <= row["latency_ms_median"] <= row["latency_ms_ci_high"]
    assert row["peak_memory_bytes"] > 0 and 0 < row["pct_of_peak"]
    # what else ran meanwhile (Linux: /proc/stat), summed over the pair's rounds
    assert row["measure_s"] > 0 and row["other_cpu_s"] > -0.1 and row["stolen_cpu_s"] >= 0
    assert all("other_cpu_s" in r for r in results.rounds)
    assert results.calibration("cpu", "float32")["matmul_flops_per_s"] > 0
    assert results.header["env"]["torch_threads"] == 1 and results.header["suite"] == "smoke"
    assert results.header["env"]["isolation"] == "process"  # measured in a worker process
    assert "torch" in stdout and "swin" in stdout and "sdpa" in stdout


def test_rounds_option_sets_the_rounds_of_every_row(cli, tmp_path, fake_clock):
    out = tmp_path / "r.jsonl"
    code, _, _ = cli("run", *FAST, "--backend", "torch", "--rounds", "2", "--out", out)
    results = store.load(out)
    assert code == 0 and [r["round"] for r in results.rounds] == [0, 1]
    assert results.rows[0]["rounds"] == 2 and results.header["policy"]["rounds"] == 2
    assert cli("run", *FAST, "--rounds", "0")[0] == 2


def test_a_slow_pair_gets_the_rounds_its_budget_holds_spread_over_the_run(cli, tmp_path, fake_backends):
    # one call of test-slow takes 30 ms: 2 one-sample rounds fit in 0.08 s, so of 5 rounds it
    # runs the first and the last, while torch runs all 5
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli("run", *CASE, "--backend", "test-slow,torch", "--max-time", "0.08",
                          "--rounds", "5", "--out", out)
    assert code == 0, stderr
    results = store.load(out)
    rounds = {b: [r["round"] for r in results.rounds if r["backend"] == b] for b in ("test-slow", "torch")}
    assert rounds == {"test-slow": [0, 4], "torch": [0, 1, 2, 3, 4]}
    rows = {r["backend"]: r for r in results.rows}
    assert rows["test-slow"]["rounds"] == 2 and rows["test-slow"]["ci_method"] == "rounds/log-t"
    assert rows["torch"]["rounds"] == 5 and rows["test-slow"]["check"] == "pass"
    assert sum(rows["test-slow"]["samples_s"]) <= 0.08 + 0.03  # the budget, within one call
    assert all(r["round_s"] > 0 and r["started_at"] > 0 for r in results.rounds)
    starts = [r["started_at"] for r in results.rounds]
    assert starts == sorted(starts)


def test_a_budget_of_one_call_gives_a_single_sample_shown_without_a_ci(cli, tmp_path, fake_backends):
    out = tmp_path / "r.jsonl"
    code, stdout, stderr = cli("run", *CASE, "--backend", "test-slow", "--max-time", "0.05",
                               "--out", out)
    assert code == 0, stderr
    row = store.load(out).rows[0]
    assert row["ci_method"] == "samples/single" and row["samples"] == 1 and row["rounds"] == 1
    assert "1 sample" in stdout and "1 rows have a single sample and so no CI" in stdout + stderr


def test_the_warm_probe_call_and_a_later_rounds_first_call_are_samples(cli, tmp_path, fake_backends):
    # round 0 of a CPU forward pair: the first call (checked; the memory pass), then the probe; a
    # later round: bind, then the first call. A call as long as the warm-up is a sample in both,
    # so every call but round 0's first is a sample: a budget of one 30 ms call costs two calls
    from tests.fakes import SlowBackend

    for budget, rounds, samples in (("0.05", "1", 1), ("0.1", "1", 3), ("0.2", "2", None)):
        before = SlowBackend.calls
        out = tmp_path / f"r{budget}.jsonl"
        code, _, stderr = cli("run", *CASE, "--backend", "test-slow", "--max-time", budget,
                              "--rounds", rounds, "--out", out)
        assert code == 0, stderr
        row = store.load(out).rows[0]
        assert row["rounds"] == int(rounds) and row["samples"] == (samples or row["samples"])
        assert SlowBackend.calls - before == 1 + row["samples"]


def _run_from_a_fresh_count(cli, tmp_path, monkeypatch, backend, max_time: str, rounds: int):
    """The results of a run of CASE on a fake backend that acts on a case's second call (its
    count of calls made starts afresh)."""
    monkeypatch.setattr(backend, "made", {})
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli("run", *CASE, "--backend", backend.name, "--max-time", max_time,
                          "--rounds", str(rounds), "--out", out)
    assert code == 0, stderr
    return store.load(out)


def test_a_slow_probe_call_does_not_decide_what_a_pairs_calls_cost(cli, tmp_path, fake_backends,
                                                                     monkeypatch):
    # calls of 30 ms in a 0.2 s budget, but the probe (the second call) takes 0.3 s: the pair
    # still gets its 4 rounds (the faster of the first call and the probe is the cost), where
    # the probe alone would make it a timeout row; the slow probe stays a sample of round 0
    from tests.fakes import HICCUP_S, HiccupBackend

    row = _run_from_a_fresh_count(cli, tmp_path, monkeypatch, HiccupBackend, "0.2", 4).rows[0]
    assert row["status"] == "ok" and row["rounds"] == 4 and row["rounds_planned"] == 4
    assert max(row["samples_s"]) >= HICCUP_S


def test_a_call_that_grew_the_heap_is_set_aside_in_its_round_only(cli, tmp_path, fake_backends,
                                                                   monkeypatch):
    # the probe (a case's second call) faults in 2 MiB of fresh pages and takes 0.2 s: round 0
    # sets it aside for the next call (retaken_s), the later rounds set nothing aside, and no
    # sample of the row is the slow call
    from tests.fakes import GROW_S, GrowingBackend

    results = _run_from_a_fresh_count(cli, tmp_path, monkeypatch, GrowingBackend, "0.3", 3)
    retaken = [r["retaken_s"] for r in results.rounds]
    assert len(retaken) == 3 and retaken[0][0] >= GROW_S and retaken[1:] == [[], []]
    assert max(results.rows[0]["samples_s"]) < GROW_S


def test_a_rows_peak_memory_is_what_one_call_holds(cli, tmp_path, fake_backends, monkeypatch):
    # test-planted holds a scratch buffer of (memory - 1) x the torch call's peak during a call;
    # on a CPU forward pass the first call is the memory pass, and the row's peak follows it
    from tests.fakes import PLANTED

    peaks = {}
    for memory in (1, 3):
        monkeypatch.setitem(PLANTED, "memory", memory)
        out = tmp_path / f"m{memory}.jsonl"
        code, _, stderr = cli("run", *CASE, "--set", "resolution=24", "--backend", "test-planted",
                              "--rounds", "1", "--out", out)
        assert code == 0, stderr
        peaks[memory] = store.load(out).rows[0]["peak_memory_bytes"]
    assert peaks[1] > 0 and abs(peaks[3] / peaks[1] - 3) < 0.01


def test_first_calls_that_compile_are_made_ahead_while_the_extension_builds(cli, tmp_path,
                                                                            fake_backends, monkeypatch):
    from natbench import extension
    from tests.fakes import COMPILE_S, CompilingBackend

    events = []

    class FakeBuild:
        def wait(self):
            events.append(("build joined", set(CompilingBackend.compiled)))

    monkeypatch.setattr(extension, "start_build", lambda: events.append("build started") or FakeBuild())
    monkeypatch.setattr(CompilingBackend, "compiled", set())
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli("run", *FAST, "--backend", "test-compiling,natten", "--set", "kernel_size=3,5",
                          "--rounds", "2", "--out", out)
    assert code == 0, stderr
    results = store.load(out)
    # both cases compiled after the build started and before the run waited for it
    assert events[0] == "build started" and len(events[1][1]) == 2
    assert results.header["prepare"]["backends"] == ["test-compiling"]
    assert results.header["prepare"]["compile_s"] >= 2 * COMPILE_S
    rows = {(r["backend"], r["kernel_size"][0]): r for r in results.rows}
    for k in (3, 5):
        assert rows[("test-compiling", k)]["compile_s"] >= COMPILE_S
        assert rows[("test-compiling", k)]["first_call_s"] < COMPILE_S  # compiled already
        assert rows[("natten", k)]["compile_s"] is None
    # a run that needs no extension compiles its flex-like backends without building it
    events.clear()
    assert cli("run", *FAST, "--backend", "test-compiling,torch", "--out", tmp_path / "c.jsonl")[0] == 0
    assert events == [] and store.load(tmp_path / "c.jsonl").header["prepare"]["backends"] == ["test-compiling"]
    # without a backend that compiles there is no such phase: the header builds the extension
    assert cli("run", *FAST, "--backend", "torch", "--out", tmp_path / "t.jsonl")[0] == 0
    assert events == [] and "prepare" not in store.load(tmp_path / "t.jsonl").header


def _run_torch_and_slow(cli, tmp_path, kernel: str, slow_timing: str):
    """Runs torch and test-slow (30 ms a call), 0.05 s and 3 rounds a pair, with `kernel` (TOML
    lines in [case]) and test-slow's own [timing.backends.test-slow] lines; returns the results."""
    suite = tmp_path / "slow.toml"
    suite.write_text(f"""
backends = ["torch", "test-slow"]
[case]
resolution = 8
heads = 2
head_dim = 16
{kernel}
[timing]
max_time_s = 0.05
rounds = 3
[timing.backends.test-slow]
{slow_timing}
""")
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli("run", "--suite", str(suite), "--device", "cpu", "--out", out)
    assert code == 0, stderr
    return store.load(out)


def test_a_suite_gives_one_backend_its_own_budget(cli, tmp_path, fake_backends):
    results = _run_torch_and_slow(cli, tmp_path, "kernel_size = 3", "max_time_s = 0.12\nrounds = 1")
    rows = {r["backend"]: r for r in results.rows}
    # 30 ms calls: 0.05 s holds one (no CI); its own 0.12 s holds several, in its one round
    slow = rows["test-slow"]
    assert (slow["rounds"], slow["ci_method"]) == (1, "samples/log-t") and slow["samples"] >= 2
    assert rows["torch"]["rounds"] == 3
    assert results.header["policy"]["backends"] == {"test-slow": {"max_time_s": 0.12, "rounds": 1}}


def test_a_backend_table_of_the_run_s_device_applies_and_another_device_s_does_not(
        cli, tmp_path, fake_backends):
    results = _run_torch_and_slow(cli, tmp_path, "kernel_size = 3",
                                  "rounds = 1\n[timing.cuda.backends.test-slow]\nrounds = 3\n"
                                  "[timing.cpu.backends.test-slow]\nmax_time_s = 0.12")
    assert results.header["policy"]["backends"] == {"test-slow": {"rounds": 1, "max_time_s": 0.12}}
    slow = next(r for r in results.rows if r["backend"] == "test-slow")
    assert slow["rounds"] == 1 and slow["samples"] >= 2  # 0.12 s holds several 30 ms calls


def test_a_backend_of_one_round_has_its_pairs_spread_over_the_rounds(cli, tmp_path, fake_backends):
    results = _run_torch_and_slow(cli, tmp_path, "[sweep]\nkernel_size = [3, 5, 7]", "rounds = 1")
    slow = [(r["kernel_size"][0], r["round"]) for r in results.rounds if r["backend"] == "test-slow"]
    assert sorted(slow) == [(3, 0), (5, 1), (7, 2)]  # one pair a round, not all in round 0
    assert sorted(r["round"] for r in results.rounds if r["backend"] == "torch") == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert {r["backend"]: r["rounds"] for r in results.rows} == {"torch": 3, "test-slow": 1}


def test_a_backend_of_fewer_rounds_starts_its_pairs_spread_with_their_rounds_equally_apart(
        cli, tmp_path, fake_backends):
    results = _run_torch_and_slow(cli, tmp_path, "[sweep]\nkernel_size = [3, 5, 7]",
                                  "max_time_s = 0.2\nrounds = 2")
    slow = sorted((r["kernel_size"][0], r["round"]) for r in results.rounds if r["backend"] == "test-slow")
    # of 3 rounds, 2 a pair: first rounds spread over 0 and 1, each pair's two one round apart
    assert slow == [(3, 0), (3, 1), (5, 0), (5, 1), (7, 1), (7, 2)]
    assert {r["backend"]: r["rounds"] for r in results.rows} == {"torch": 3, "test-slow": 2}


def test_json_prints_only_json_rows(cli, tmp_path, fake_clock):
    code, stdout, _ = cli("run", *FAST, "--backend", "torch", "--json", "--out", tmp_path / "r.jsonl")
    assert code == 0
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["backend"] for r in rows] == ["torch"]


def test_impossible_case_is_a_skipped_row_with_its_reason(cli, tmp_path, fake_clock):
    out = tmp_path / "r.jsonl"
    code, _, _ = cli("run", *FAST, "--backend", "torch", "--set", "kernel_size=3,12", "--out", out)
    assert code == 0
    rows = {r["kernel_size"][0]: r for r in store.load(out).rows}
    assert rows[3]["status"] == "ok"
    assert rows[12]["status"] == "skipped"
    assert "axis 0: kernel_size 12 x dilation 1 > length 8" in rows[12]["reason"]


def test_backend_errors_and_ooms_become_rows_and_the_sweep_goes_on(cli, tmp_path, fake_backends):
    out = tmp_path / "r.jsonl"
    code, stdout, _ = cli("run", *FAST, "--backend", "test-raising,test-oom,torch", "--out", out)
    assert code == 0
    rows = {r["backend"]: r for r in store.load(out).rows}
    assert rows["test-raising"]["status"] == "error"
    assert "kernel launch failed on purpose" in rows["test-raising"]["reason"]
    assert rows["test-oom"]["status"] == "oom"
    assert rows["torch"]["status"] == "ok"


def test_a_wrong_backend_is_flagged_never_reported_as_fast(cli, tmp_path, fake_backends):
    out = tmp_path / "r.jsonl"
    code, stdout, stderr = cli("run", *FAST, "--backend", "test-wrong", "--out", out)
    (row,) = store.load(out).rows
    assert row["check"] == "fail" and row["max_abs_error"] > row["tolerance"]
    assert "WRONG" in stdout and "wrong answer" in stderr
    code, _, stderr = cli("verify", *CASE, "--backend", "test-wrong,torch")
    assert code == 1 and "1 of 2 checks failed" in stderr


def test_verify_passes_for_the_available_backends(cli):
    code, stdout, stderr = cli("verify", *CASE)
    assert code == 0, stdout + stderr
    assert "FAIL" not in stdout and "checks passed" in stderr


def _interrupt_at_third_call(monkeypatch, name: str):
    """natbench.runner's `name` raising KeyboardInterrupt on its third call, as Ctrl-C would;
    returns the real function and the list of backends it was called for."""
    from natbench import runner

    real, calls = getattr(runner, name), []

    def counted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, name, counted)
    return real, calls


def test_ctrl_c_keeps_finished_rounds_and_resume_completes(cli, tmp_path, monkeypatch, fake_clock):
    out = tmp_path / "r.jsonl"
    real, calls = _interrupt_at_third_call(monkeypatch, "run_pair")
    code, _, stderr = cli("run", *FAST, "--out", out)
    assert code == 130 and "--resume" in stderr
    partial = store.load(out)
    assert len(partial.rounds) == 2 and not partial.rows  # two first rounds finished
    calls.clear()
    code, _, _ = cli("run", *FAST, "--out", out, "--resume")
    results = store.load(out)
    assert code == 0 and len(calls) == 2  # only the pairs whose first round was missing
    assert len(results.rows) == 4 and len({(r["case_key"], r["backend"]) for r in results.rows}) == 4
    assert all(r["rounds"] == 3 and len(r["round_medians_ms"]) == 3 for r in results.rows)


def test_a_pair_stopped_between_its_last_round_and_its_row_gets_its_row_on_resume(cli, tmp_path,
                                                                                fake_clock):
    # a job killed right after writing a pair's last round (a pre-empted SLURM job did this)
    out = tmp_path / "r.jsonl"
    assert cli("run", *FAST, "--backend", "torch,swin", "--rounds", "2", "--out", out)[0] == 0
    whole = store.load(out)
    lines = out.read_text().splitlines()
    dropped = next(i for i, line in enumerate(lines) if '"record":"row"' in line and '"backend":"swin"' in line)
    out.write_text("\n".join(lines[:dropped] + lines[dropped + 1:]) + "\n")
    code, _, stderr = cli("run", "--out", out, "--resume")
    assert code == 0, stderr
    resumed = store.load(out)
    assert len(resumed.rounds) == len(whole.rounds)  # nothing measured again
    swin = [r for r in resumed.rows if r["backend"] == "swin"]
    assert len(swin) == 1 and swin[0]["rounds"] == 2
    assert swin[0]["latency_ms_median"] == next(r for r in whole.rows if r["backend"] == "swin")["latency_ms_median"]


def test_resume_continues_the_plan_the_run_was_asked_with(cli, tmp_path, monkeypatch, fake_clock):
    from natbench import runner

    out = tmp_path / "r.jsonl"
    real, _ = _interrupt_at_third_call(monkeypatch, "time_again")  # in round 2
    asked = ["run", "--suite", "smoke", "--device", "cpu", "--backend", "torch,swin", "--set",
             "resolution=8", "--pass", "fwd", "--max-time", "0.05"]
    code, _, stderr = cli(*asked, "--out", out)
    partial = store.load(out)
    on_disk = len([r for r in partial.rounds if (r["case_key"], r["backend"])
                   not in {(x["case_key"], x["backend"]) for x in partial.rows}])
    assert code == 130 and f"0 finished rows and {on_disk} rounds of unfinished pairs" in stderr
    assert on_disk == 6 and f"`natbench run --out {out} --resume`" in stderr
    assert partial.header["plan"]["backend"] == "torch,swin"
    monkeypatch.setattr(runner, "time_again", real)
    # another plan is refused, naming the option; the file's plan needs no options at all
    code, _, stderr = cli("run", "--backend", "torch", "--out", out, "--resume")
    assert code == 2 and "--backend 'torch'" in stderr and "'torch,swin'" in stderr
    code, _, stderr = cli("run", "--out", out, "--resume")
    results = store.load(out)
    assert code == 0, stderr
    assert {(r["backend"], r["resolution"][0]) for r in results.rows} == {
        ("torch", 8), ("swin", 8)} and len(results.rows) == 4  # kernel sizes 3 and 5
    # told to, a resume takes the option typed now and the rest of the plan
    assert cli("run", "--backend", "torch,swin,sdpa", "--out", out, "--resume", "--force")[0] == 0
    rows = store.load(out).rows
    assert len(rows) == 6 and {r["resolution"][0] for r in rows} == {8}


@pytest.mark.parametrize("args,message", [
    (["run", "--suite", "smoek"], "did you mean 'smoke'"),
    (["run", "--suite", "smoke", "--backend", "trch"], "did you mean 'torch'"),
    (["run", "--suite", "smoke", "--set", "kernal_size=3"], "did you mean 'kernel_size'"),
    (["run", "--suite", "smoke", "--device", "tpu"], "--device 'tpu': use cpu, cuda or auto"),
    (["run", "--suite", "smoke", "--dtype", "float8"], "unknown dtype 'float8'"),
    (["run", "--suite", "smoke", "--resume"], "--resume needs --out"),
    (["export", "nowhere.jsonl"], "no such results file"),
    (["run", "--suite", "smoke", "--threads", "0"], "--threads '0': use a positive count, or auto"),
    (["run", "--suite", "smoke", "--threads", "two"], "--threads 'two'"),
    # every numeric option and axis value is checked before anything runs
    (["run", "--suite", "smoke", "--set", "kernel_size=abc"], "'abc' is not an integer"),
    (["run", "--suite", "smoke", "--set", "kernel_size=7xq"], "'7xq' is not an integer"),
    (["run", "--suite", "smoke", "--set", "heads=2.5"], "'2.5' is not an integer"),
    (["run", "--suite", "smoke", "--set", "resolution=0"], "resolution 0 < 1"),
    (["run", "--suite", "smoke", "--set", "batch=-1"], "batch -1 < 1"),
    (["run", "--suite", "smoke", "--set", "dilation=0"], "dilation 0 < 1"),
    (["run", "--suite", "smoke", "--set", "stride=0"], "stride 0 < 1"),
    (["run", "--suite", "smoke", "--set", "kernel_size=3,0"], "kernel_size 0 < 1"),
    (["run", "--suite", "smoke", "--set", "rank=4"], "rank 4 is not 1, 2 or 3"),
    (["run", "--suite", "smoke", "--set", "rpb=maybe"], "'maybe' is not a boolean"),
    (["run", "--suite", "smoke", "--set", "is_causal=yes"], "'yes' is not a boolean"),
    (["run", "--suite", "smoke", "--set", "kernel_size"], "expected AXIS=VALUE"),
    (["run", "--suite", "smoke", "--set", "kernel_size="], "no value after '='"),
    (["run", "--suite", "smoke", "--pass", "fwdd"], "pass 'fwdd' is not one of fwd, bwd, fwdbwd"),
    (["run", "--suite", "smoke", "--max-time", "-1"], "--max-time -1: use a positive number"),
    (["run", "--suite", "smoke", "--max-time", "0"], "--max-time 0: use a positive number"),
    (["run", "--suite", "smoke", "--max-time", "nan"], "--max-time nan"),
    (["run", "--suite", "smoke", "--rounds", "0"], "--rounds"),
    (["compare", "torch", "swin", "--max-time", "-2"], "--max-time -2"),
    (["gate", "--baseline", BASELINE, "--suite", "smoke", "--set", "heads=0"], "heads 0 < 1"),
    (["verify", "--suite", "smoke", "--set", "kernel_size=x"], "'x' is not an integer"),
    (["profile", "--backend", "torch", "--set", "resolution=-4"], "resolution -4 < 1"),
    (["profile", "--backend", "torch", "--steps", "0"], "--steps"),
])
def test_bad_input_exits_2_with_a_clear_message(cli, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a run that started anyway would write its results
    code, _, stderr = cli(*args)
    assert code == 2 and message in stderr
    assert not list(tmp_path.rglob("*.jsonl"))  # nothing ran


def test_a_suite_file_value_of_the_wrong_type_names_the_file_and_the_value(cli, tmp_path):
    path = tmp_path / "types.toml"
    path.write_text("backends = ['torch']\n[case]\nkernel_size = 'abc'\n")
    code, _, stderr = cli("run", "--suite", path)
    assert code == 2 and "types.toml" in stderr and "kernel_size 'abc' is not an integer" in stderr
    path.write_text("backends = ['torch']\n[case]\n[sweep]\nresolution = [16, 0]\n")
    code, _, stderr = cli("run", "--suite", path)
    assert code == 2 and "types.toml" in stderr and "resolution 0 < 1" in stderr


def test_malformed_suite_file_exits_2_with_file_line_key(cli, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("backends = ['torch']\n[case]\nheds = 2\n")
    code, _, stderr = cli("run", "--suite", path)
    assert code == 2 and "bad.toml:3: key 'heds'" in stderr and "did you mean 'heads'" in stderr


def test_a_bad_thread_count_in_a_suite_file_names_the_file(cli, tmp_path):
    path = tmp_path / "threads.toml"
    path.write_text("backends = ['torch']\n[case]\nheads = 2\n[timing]\nthreads = 0\n")
    code, _, stderr = cli("run", "--suite", path)
    assert code == 2 and "threads.toml" in stderr and "threads 0: use a positive count" in stderr


def test_threads_option_sets_torchs_count_for_the_run_then_restores_it(cli, tmp_path):
    import torch

    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli("run", *FAST, "--backend", "torch,sdpa", "--threads", threads, "--out", out)
    assert code == 0, stderr
    results = store.load(out)
    assert results.header["env"]["torch_threads"] == threads and results.header["policy"]["threads"] == threads
    assert {r["threads"] for r in results.rows} == {threads}
    assert torch.get_num_threads() == before
    # resuming with another count would mix two setups in one file: the plan refuses it, and
    # told to change the plan, the file's setup still does
    code, _, stderr = cli("run", *FAST, "--backend", "torch,sdpa", "--threads", before, "--out", out,
                          "--resume")
    assert code == 2 and f"--threads '{before}'" in stderr
    code, _, stderr = cli("run", *FAST, "--backend", "torch,sdpa", "--threads", before, "--out", out,
                          "--resume", "--force")
    assert code == 2 and "torch_threads" in stderr


def test_list_and_env_report_backends_suites_and_machine(cli):
    code, stdout, _ = cli("list", "--json")
    listing = json.loads(stdout)
    assert code == 0 and {b["name"] for b in listing["backends"]} >= {"torch", "swin", "flex"}
    assert all(b["available"] or b["reason"] for b in listing["backends"])
    assert {"smoke": 4, "kernel-sizes": 15}.items() <= {s["name"]: s["cases"] for s in listing["suites"]}.items()
    code, stdout, _ = cli("env", "--json", "--device", "cpu")
    header = json.loads(stdout)
    assert code == 0 and header["env"]["torch_version"] and header["env"]["cpu_model"]
    assert header["env"]["torch_cpu_capability"] in ("DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512",
                                                     "SVE256")
    assert header["env"]["torch_threads"] == 1  # what a run with the default --threads records
    code, stdout, _ = cli("env", "--json", "--device", "cpu", "--threads", "2")
    assert code == 0 and json.loads(stdout)["env"]["torch_threads"] == 2


def test_list_and_env_compile_nothing_and_say_how_to_build(cli, tmp_path, monkeypatch):
    # an empty extensions folder: the extension is not built here, and these commands must not
    # build it (a minute of compiling for a listing)
    from natbench.extension import NOT_BUILT

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    code, stdout, _ = cli("list", "--json")
    natten = {b["name"]: b for b in json.loads(stdout)["backends"]}["natten"]
    assert code == 0 and natten["state"] == "not built" and "natbench build" in natten["reason"]
    code, stdout, _ = cli("list")
    assert code == 0 and "not built" in stdout
    code, stdout, _ = cli("env", "--json", "--device", "cpu")
    env = json.loads(stdout)["env"]
    assert code == 0 and not env["extension_ok"] and env["extension_reason"] == NOT_BUILT
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "markdown", "parquet"])
def test_export_formats(cli, tmp_path, fmt, fake_clock):
    import pandas as pd

    results = tmp_path / "r.jsonl"
    assert cli("run", *FAST, "--backend", "torch", "--out", results)[0] == 0
    target = tmp_path / f"out.{fmt}"
    code, _, _ = cli("export", results, "--format", fmt, "--out", target)
    assert code == 0
    if fmt == "parquet":
        frame = pd.read_parquet(target)
        assert frame.loc[0, "backend"] == "torch" and frame.loc[0, "latency_ms_median"] > 0
    else:
        assert "latency_ms_median" in target.read_text() and "torch" in target.read_text()


def test_help_does_not_import_torch():
    code = ("import sys\nfrom natbench.cli import app\n"
            "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")
