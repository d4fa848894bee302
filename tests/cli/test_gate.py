"""natbench gate, baseline update and the CI exports through the real entry point."""

import json
import re

import pytest

from natbench import store
from tests import synthetic


@pytest.fixture
def files(tmp_path):
    base = synthetic.write(tmp_path / "base.jsonl", [synthetic.row("torch", 7, 1e-3, seed=1)])
    same = synthetic.write(tmp_path / "same.jsonl", [synthetic.row("torch", 7, 1e-3, seed=2)])
    slow = synthetic.write(tmp_path / "slow.jsonl", [synthetic.row("torch", 7, 1.5e-3, seed=3)])
    return base, same, slow


def test_exit_0_on_pass_1_on_regression(cli, files):
    base, same, slow = files
    code, stdout, _ = cli("gate", "--baseline", base, "--current", same)
    assert code == 0 and "gate PASS" in stdout
    code, stdout, stderr = cli("gate", "--baseline", base, "--current", slow)
    assert code == 1 and "gate FAIL: 1 regressions" in stdout
    assert "1 regressions against" in stderr and re.search(r"latency: /1\.000 drift \+(49|5\d)\.\d% \[", stderr)


def test_json_and_the_github_step_summary(cli, files, tmp_path, monkeypatch):
    import natbench.env

    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setattr(natbench.env, "GITHUB_STEP_SUMMARY", str(summary))
    base, _, slow = files
    code, stdout, _ = cli("gate", "--baseline", base, "--current", slow, "--json")
    record = json.loads(stdout)
    assert code == 1 and record["passed"] is False and record["regressions"] == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n## natbench gate") and "| torch |" in text


def test_a_threshold_option_changes_the_decision(cli, files):
    base, _, slow = files
    assert cli("gate", "--baseline", base, "--current", slow, "--threshold", "latency=0.6")[0] == 0


@pytest.mark.parametrize("args, words", [
    (["--current", "{tmp}/nosuch.jsonl"], "no such results file"),
    ([], "exactly one of --current"),
    (["--current", "{same}", "--suite", "smoke"], "exactly one of --current"),
    (["--current", "{same}", "--threshold", "latency=x"], "not a number"),
    (["--suite", "nosuch-suite"], "nosuch-suite"),
    (["--current", "{garbage}"], "not a JSON record"),
    (["--current", "{other}"], "cpu_model"),
])
def test_bad_input_exits_2_naming_the_file(cli, files, tmp_path, args, words):
    base, same, _ = files
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n{}\n")
    other = synthetic.write(tmp_path / "other.jsonl", [synthetic.row("torch", 7, 1e-3)], {"cpu_model": "Other"})
    args = [a.format(tmp=tmp_path, same=same, garbage=garbage, other=other) for a in args]
    code, _, stderr = cli("gate", "--baseline", base, *args)
    assert code == 2 and words in stderr


def test_normalize_accepts_another_machine_of_the_same_kind(cli, files, tmp_path):
    base, _, _ = files
    other = synthetic.write(tmp_path / "other.jsonl", [synthetic.row("torch", 7, 1e-3, seed=4)],
                            {"cpu_model": "Other"})
    assert cli("gate", "--baseline", base, "--current", other, "--normalize")[0] == 0


def test_baseline_update_then_gate_a_live_run(cli, tmp_path, fake_clock):
    baseline = tmp_path / "base.jsonl"
    # one thread: at two, other work on a 2-vCPU VM can double this tiny call
    case = ["--suite", "smoke", "--device", "cpu", "--backend", "torch", "--set", "resolution=8",
            "--set", "kernel_size=3", "--pass", "fwd", "--max-time", "0.1", "--threads", "1"]
    code, stdout, stderr = cli("baseline", "update", *case, "--repeats", "2", "--out", baseline)
    assert code == 0, stderr
    [row] = store.load(baseline).rows
    assert len(row["repeat_medians_ms"]) == 2 and row["samples"] == len(row["samples_s"])
    code, stdout, stderr = cli("gate", "--baseline", baseline, *case, "--out", tmp_path / "cur.jsonl",
                               "--threshold", "latency=1.0")
    assert code == 0, stderr


def test_a_latency_regression_of_a_live_run_fails_only_if_measuring_it_again_confirms_it(
        cli, tmp_path, fake_backends, monkeypatch):
    from tests.fakes import FlakyBackend

    baseline = tmp_path / "base.jsonl"
    case = ["--suite", "smoke", "--device", "cpu", "--backend", "test-flaky", "--set", "resolution=8",
            "--set", "kernel_size=3", "--pass", "fwd", "--max-time", "0.1", "--rounds", "4",
            "--threads", "1", "--threshold", "latency=2.0"]
    assert cli("baseline", "update", *case[:-2], "--repeats", "1", "--out", baseline)[0] == 0
    # slow for the whole gated run (its 4 rounds bind 4 times), as fast as the baseline after it.
    # 8x against a threshold of +200%: a fast rerun of calls this tiny can come out +83% on a
    # noisy host, so the rerun's margin must be wide.
    monkeypatch.setattr(FlakyBackend, "slow_binds", 4)
    code, stdout, stderr = cli("gate", "--baseline", baseline, *case, "--out", tmp_path / "a.jsonl",
                               "--confirm", "1")
    assert code == 0, stderr
    assert "0 regressions, 1 unconfirmed" in stdout and "measured again" in stdout
    [row] = store.load(tmp_path / "a-confirm1.jsonl").rows  # the second look is kept
    assert row["backend"] == "test-flaky" and row["status"] == "ok"
    # slow in the rerun too: it stands
    monkeypatch.setattr(FlakyBackend, "slow_binds", 8)
    code, stdout, stderr = cli("gate", "--baseline", baseline, *case, "--out", tmp_path / "b.jsonl",
                               "--confirm", "1", "--json")
    verdict = json.loads(stdout)  # the second look writes nothing else to stdout
    assert code == 1 and (verdict["regressions"], verdict["unconfirmed"]) == (1, 0)
    [latency] = [f for f in verdict["findings"] if f["metric"] == "latency"]
    assert "measured again: +" in latency["message"] and (tmp_path / "b-confirm1.jsonl").exists()
    # by default the first run alone decides
    monkeypatch.setattr(FlakyBackend, "slow_binds", 4)
    code, stdout, _ = cli("gate", "--baseline", baseline, *case, "--out", tmp_path / "c.jsonl")
    assert code == 1 and not (tmp_path / "c-confirm1.jsonl").exists()


def test_exports_for_ci_trackers(cli, tmp_path):
    results = synthetic.sweep(tmp_path / "a.jsonl")
    code, stdout, _ = cli("export", results, "--format", "github-action-benchmark")
    entries = json.loads(stdout)
    assert code == 0 and {e["unit"] for e in entries} == {"ms", "bytes"}
    assert not [e for e in entries if e["name"].startswith("test-wrong")]  # wrong answers are not results
    latency = next(e for e in entries if e["unit"] == "ms")
    assert latency["value"] > 0 and latency["range"].startswith("±")
    code, stdout, _ = cli("export", results, "--format", "bmf")
    bmf = json.loads(stdout)
    name = next(iter(bmf))
    assert code == 0 and len(bmf) == 8
    assert bmf[name]["latency"]["lower_value"] <= bmf[name]["latency"]["value"] <= bmf[name]["latency"]["upper_value"]


def test_a_baseline_directory_gives_the_baseline_of_this_kind_of_machine(cli, tmp_path):
    # two machine kinds, one of them slow: picking the wrong baseline would pass a regression
    # (or fail a good run); the current file is from the "Test CPU" kind
    directory = tmp_path / "baselines"
    directory.mkdir()
    synthetic.write(directory / "a.jsonl", [synthetic.row("torch", 7, 3e-3, seed=1)], {"cpu_model": "Other CPU"})
    synthetic.write(directory / "b.jsonl", [synthetic.row("torch", 7, 1e-3, seed=2)])
    slow = synthetic.write(tmp_path / "slow.jsonl", [synthetic.row("torch", 7, 1.5e-3, seed=3)])
    code, _, stderr = cli("gate", "--baseline", directory, "--current", slow)
    assert code == 1 and f"baseline for this machine: {directory / 'b.jsonl'}" in stderr
    # --json: stdout is the verdict and nothing else
    code, stdout, _ = cli("gate", "--baseline", directory, "--current", slow, "--json")
    verdict = json.loads(stdout)
    assert code == 1 and verdict["applied"] and verdict["baseline"] == str(directory / "b.jsonl")
    # a machine kind with no baseline: exit 2 naming the kind and how to record one, or, when
    # asked (CI on a new kind of machine), exit 0 saying the gate was not applied
    (directory / "b.jsonl").unlink()
    code, _, stderr = cli("gate", "--baseline", directory, "--current", slow)
    assert code == 2 and "cpu_model 'Test CPU'" in stderr and "natbench baseline update" in stderr
    code, stdout, _ = cli("gate", "--baseline", directory, "--current", slow, "--no-baseline-ok")
    assert code == 0 and "not applied" in stdout
    code, stdout, _ = cli("gate", "--baseline", directory, "--current", slow, "--no-baseline-ok", "--json")
    verdict = json.loads(stdout)
    assert code == 0 and not verdict["applied"] and "cpu_model 'Test CPU'" in verdict["reason"]
