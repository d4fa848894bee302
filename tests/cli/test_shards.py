"""Sharded runs, merge, the dry run and `natbench launch` through the real entry point."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natbench import store

# 4 cases at a map of 8 (K 9 does not fit it: every backend skips it), two backends
SWEEP = ["--suite", "smoke", "--device", "cpu", "--set", "resolution=8", "--set", "kernel_size=3,5,7,9",
         "--pass", "fwd", "--backend", "torch,swin", "--max-time", "0.05", "--rounds", "2"]
ROOT = Path(__file__).resolve().parents[2]


def _outcomes(results) -> dict:
    return {(r["case_key"], r["backend"]): (r["status"], r.get("check")) for r in results.rows}


def test_three_shards_merged_give_the_pairs_of_one_run(cli, tmp_path, fake_clock):
    whole = tmp_path / "whole.jsonl"
    assert cli("run", *SWEEP, "--out", whole)[0] == 0
    parts = [tmp_path / f"s{i}.jsonl" for i in (1, 2, 3)]
    for i, part in enumerate(parts, 1):
        code, _, stderr = cli("run", *SWEEP, "--shard", f"{i}/3", "--out", part)
        assert code == 0, stderr
        shard = store.load(part).header["shard"]
        assert shard["index"] == i and shard["count"] == 3 and len(shard["suite_cases"]) == 4
        # a case's backends stay together in one shard
        assert {r["case_key"] for r in store.load(part).rows} == set(shard["cases"])
    merged = tmp_path / "merged.jsonl"
    code, _, stderr = cli("merge", *parts, "--out", merged)
    assert code == 0, stderr
    joined = store.load(merged)
    assert _outcomes(joined) == _outcomes(store.load(whole))
    assert {s["shard"] for s in joined.header["shard"]["merged"]} == {"1/3", "2/3", "3/3"}
    assert joined.header["plan"]["shard"] is None
    # the merged file reads as any other
    assert cli("export", merged, "--format", "csv", "--out", tmp_path / "m.csv")[0] == 0
    assert cli("report", merged, "--out", tmp_path / "m.html")[0] == 0
    assert cli("plot", merged, "--no-roofline", "--out", tmp_path / "plots")[0] == 0
    assert any(p.suffix == ".png" for p in (tmp_path / "plots").iterdir())
    code, stdout, stderr = cli("compare", whole, merged, "--json")
    assert code == 0 and json.loads(stdout), stderr
    code, _, stderr = cli("gate", "--baseline", whole, "--current", merged)
    assert code in (0, 1) and "error" not in stderr.lower(), stderr


def test_merge_refuses_other_setups_overlaps_and_missing_pairs(cli, tmp_path, fake_clock):
    parts = [tmp_path / f"s{i}.jsonl" for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        assert cli("run", *SWEEP, "--shard", f"{i}/2", "--out", part)[0] == 0
    other = tmp_path / "other.jsonl"
    assert cli("run", *SWEEP[:-2], "--rounds", "3", "--shard", "2/2", "--out", other)[0] == 0
    out = tmp_path / "m.jsonl"
    code, _, stderr = cli("merge", parts[0], other, "--out", out)
    assert code == 2 and "not a shard of the same run" in stderr and "rounds" in stderr
    code, _, stderr = cli("merge", parts[0], parts[0], "--out", out)
    assert code == 2 and "more than one file" in stderr
    code, _, stderr = cli("merge", parts[0], "--out", out)
    assert code == 2 and "have no row" in stderr and "shards 2/2 not given" in stderr and not out.exists()
    code, _, stderr = cli("merge", parts[0], "--out", out, "--allow-missing")
    assert code == 0 and "have no row" in stderr
    missing = store.load(out).header["shard"]["missing"]
    assert missing and all(pair[1] in ("torch", "swin") for pair in missing)
    code, _, stderr = cli("merge", *parts, "--out", out)
    assert code == 2 and "already exists" in stderr
    assert cli("merge", *parts, "--out", out, "--force")[0] == 0


def test_a_shard_resumes_its_own_part(cli, tmp_path, fake_clock):
    part = tmp_path / "s.jsonl"
    assert cli("run", *SWEEP, "--shard", "2/2", "--out", part)[0] == 0
    before = store.load(part)
    # resuming a complete shard measures nothing and keeps its plan, shard included
    assert cli("run", "--out", part, "--resume")[0] == 0
    after = store.load(part)
    assert len(after.rows) == len(before.rows) and after.header["shard"] == before.header["shard"]
    code, _, stderr = cli("run", "--out", part, "--resume", "--shard", "1/2")
    assert code == 2 and "--shard" in stderr


@pytest.mark.parametrize("args,message", [
    (["--shard", "3/2"], "use I/N"),
    (["--shard", "1/5"], "use at most 4 shards"),
])
def test_bad_shards_exit_2_with_what_to_do(cli, tmp_path, args, message):
    code, _, stderr = cli("run", *SWEEP, *args, "--out", tmp_path / "r.jsonl")
    assert code == 2 and message in stderr and not (tmp_path / "r.jsonl").exists()


def test_the_dry_run_plans_every_pair_and_measures_nothing(cli, tmp_path):
    out = tmp_path / "r.jsonl"
    code, stdout, _ = cli("run", *SWEEP, "--shard", "1/2", "--dry-run", "--json", "--out", out)
    assert code == 0 and not out.exists()
    plan = json.loads(stdout)
    assert len(plan["pairs"]) == 8 and plan["expected_s"] > 0
    skipped = [p for p in plan["pairs"] if p["skip"]]
    assert len(skipped) == 2 and all("9" in p["case_key"] for p in skipped)
    assert {p["shard"] for p in plan["pairs"]} == {1, 2} and plan["shards"]["count"] == 2
    code, _, stderr = cli("run", *SWEEP, "--dry-run")
    assert code == 0 and "6 pairs to measure, 2 to skip" in stderr


def test_the_dry_run_of_kernel_sizes_is_quick_and_compiles_nothing(tmp_path):
    code = ("import sys, time\nfrom natbench.cli import app\nbegin = time.perf_counter()\n"
            "try:\n    app(['run', '--suite', 'kernel-sizes', '--device', 'cpu', '--dry-run', '--json'],"
            " standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - begin, file=sys.stderr)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torch._inductor', 'triton', 'natten.'))),"
            " file=sys.stderr)")
    # an empty extensions folder: the dry run must not build into it
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                            cwd=ROOT)
    seconds, modules = result.stderr.strip().splitlines()[-2:]
    assert float(seconds) < 30 and modules == "[]"
    assert not (tmp_path / "ext").exists() or not any((tmp_path / "ext").iterdir())
    plan = json.loads(result.stdout)
    assert len(plan["pairs"]) == 15 * 7 and plan["fixed_s"]["building the extension"] > 0


def test_launch_without_submitit_says_how_to_get_it(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    code, _, stderr = cli("launch", *SWEEP, "--shards", "2", "--executor", "local", "--out", tmp_path / "l")
    assert code == 2 and "pip install 'natbench[cluster]'" in stderr


@pytest.mark.worker
def test_launch_local_jobs_merge_to_one_run_and_resume_a_killed_shard(cli, tmp_path):
    pytest.importorskip("submitit")
    folder = tmp_path / "sweep"
    code, _, stderr = cli("launch", *SWEEP, "--shards", "3", "--executor", "local", "--gpus-per-job", "0",
                          "--out", folder)
    assert code == 0, stderr
    merged = folder / "smoke-cpu.jsonl"
    joined = store.load(merged)
    whole = tmp_path / "whole.jsonl"
    assert cli("run", *SWEEP, "--out", whole)[0] == 0
    assert _outcomes(joined) == _outcomes(store.load(whole))
    # shard 2 killed midway: run by hand again and stopped after its first row
    second = folder / "shard-2-of-3.jsonl"
    second.unlink()
    command = json.loads((folder / "launch.json").read_text())
    job = subprocess.Popen([sys.executable, "-m", "natbench", "run", *SWEEP, "--shard", "2/3", "--out",
                            str(second), "--quiet"], cwd=ROOT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and '"record":"row"' not in (second.read_text() if second.exists() else ""):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    rows_before = len(store.load(second).rows)
    assert 1 <= rows_before < 2 * len(command["split"][1])
    others = {p: p.stat().st_mtime_ns for p in (folder / "shard-1-of-3.jsonl", folder / "shard-3-of-3.jsonl")}
    code, _, stderr = cli("launch", "--out", folder, "--resume", "--executor", "local")
    assert code == 0, stderr
    assert "shard 2/3: job" in stderr and "shard 1/3" not in stderr
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())  # only shard 2 ran again
    assert _outcomes(store.load(merged)) == _outcomes(store.load(whole))


def test_launch_dry_run_shows_every_job_and_the_sbatch_script_and_submits_nothing(cli, tmp_path):
    pytest.importorskip("submitit")
    folder = tmp_path / "sweep"
    code, stdout, stderr = cli("launch", *SWEEP, "--shards", "2", "--partition", "gpu", "--time", "30",
                               "--slurm-arg", "account=proj", "--out", folder, "--dry-run", "--json")
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert [job[job.index("--shard") + 1] for job in plan["jobs"]] == ["1/2", "2/2"]
    assert all("--max-time" in job and "--device" in job for job in plan["jobs"])
    assert "#SBATCH --partition=gpu" in plan["sbatch"] and "#SBATCH --account=proj" in plan["sbatch"]
    assert not folder.exists()
    code, _, stderr = cli("launch", *SWEEP, "--shards", "5", "--out", folder, "--dry-run")
    assert code == 2 and "use at most 4 shards" in stderr


def test_launch_on_a_machine_without_slurm_says_where_to_run_it(cli, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import shutil

    monkeypatch.setattr(shutil, "which", lambda tool: None)
    folder = tmp_path / "sweep"
    code, _, stderr = cli("launch", *SWEEP, "--shards", "2", "--executor", "slurm", "--out", folder)
    assert code == 2 and "sbatch and srun not found" in stderr and "--executor local" in stderr
    assert not folder.exists()
