"""natbench gpu-check: its budget on a fake clock, its refusal without CUDA, and a rehearsal of
every step on the CPU."""

import json
import subprocess
import sys
import time

import pytest
import torch

from natbench import gpucheck
from natbench.gpucheck import Outcome, Step, run_steps


def _steps(*caps_and_floors):
    return [Step(f"s{i}", ("true",), cap_s=cap, floor_s=floor) for i, (cap, floor) in enumerate(caps_and_floors)]


def _executor(clock, costs, overrun=0.0):
    """A step that takes costs[name] seconds of simulated time, cut at its timeout (`overrun`
    seconds late, as a kill can be)."""
    given = {}

    def execute(step, timeout):
        given[step.name] = timeout
        cost = costs[step.name]
        clock.spend(cost if cost <= timeout else timeout + overrun)
        return Outcome(step.name, "ok" if cost <= timeout else "timeout")

    return execute, given


def test_each_step_gets_its_cap_while_the_budget_lasts(fake_clock):
    execute, given = _executor(fake_clock, {"s0": 10, "s1": 5, "s2": 1})
    outcomes = run_steps(_steps((30, 5), (20, 5), (10, 5)), 100, execute)
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    assert given == {"s0": 30, "s1": 20, "s2": 10}


def test_a_step_is_cut_to_leave_the_later_steps_their_floors_and_the_total_holds(fake_clock):
    """A budget of 60 s: the first step may not eat into the 5 + 10 s floors of the two after it,
    so it is killed at 45 s; the others still run and the whole check ends inside 60 s."""
    execute, given = _executor(fake_clock, {"s0": 1000, "s1": 1000, "s2": 1000})
    begin = fake_clock.t
    outcomes = run_steps(_steps((100, 5), (50, 5), (50, 10)), 60.1, execute)
    assert [o.status for o in outcomes] == ["timeout", "timeout", "timeout"]
    assert given["s0"] == pytest.approx(45, abs=0.11)
    assert given["s1"] == pytest.approx(5, abs=0.11)
    assert given["s2"] == pytest.approx(10, abs=0.11)
    assert fake_clock.t - begin <= 60.1 + 0.01  # the budget, and the clock readings of the bookkeeping
    assert all(o.seconds <= o.timeout_s + 0.01 for o in outcomes)


def test_a_step_whose_floor_no_longer_fits_is_skipped_as_budget_spent(fake_clock):
    """The first step's kill comes 15 s late: the second no longer has its 10 s floor and is
    skipped, and the third still has its own."""
    execute, given = _executor(fake_clock, {"s0": 1000, "s1": 1, "s2": 1}, overrun=15)
    outcomes = run_steps(_steps((30, 5), (30, 10), (5, 5)), 50.5, execute)
    assert [o.status for o in outcomes] == ["timeout", "skipped", "ok"]
    assert "budget is spent" in outcomes[1].note and "s1" not in given


def test_a_step_that_cannot_run_here_is_skipped_with_its_reason_and_leaves_its_floor(fake_clock):
    execute, given = _executor(fake_clock, {"s0": 1, "s2": 1})
    steps = _steps((50, 5), (50, 30), (50, 5))
    steps[1] = Step("s1", ("true",), cap_s=50, floor_s=30, skip="hypothesis is not installed")
    outcomes = run_steps(steps, 60, execute)
    assert outcomes[1].status == "skipped" and outcomes[1].note == "hypothesis is not installed"
    assert given["s0"] == pytest.approx(50, abs=0.01)  # the skipped step's floor is not kept back


def test_a_timed_out_child_is_killed_with_its_own_children(tmp_path):
    """The step's session goes: a grandchild (a measuring worker) does not outlive its step."""
    marker = tmp_path / "grandchild-alive"
    (tmp_path / "grandchild.py").write_text(f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').close()\n")
    (tmp_path / "child.py").write_text(f"import subprocess, sys, time\n"
                                       f"subprocess.Popen([sys.executable, {str(tmp_path / 'grandchild.py')!r}])\n"
                                       f"time.sleep(30)\n")
    execute = gpucheck.subprocess_executor(tmp_path)
    outcome = execute(Step("sleeper", (sys.executable, str(tmp_path / "child.py")), cap_s=1), 1.0)
    assert outcome.status == "timeout"
    time.sleep(4)
    assert not marker.exists()


def test_the_device_folder_is_named_after_the_gpu():
    assert gpucheck.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_exits_2_saying_so(tmp_path):
    child = subprocess.run([sys.executable, "-m", "natbench", "gpu-check", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 2
    assert "no CUDA device is visible" in child.stderr and "--device cpu" in child.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.worker
def test_the_rehearsal_on_the_cpu_runs_every_step_and_writes_everything(tmp_path):
    out = tmp_path / "gpu"
    child = subprocess.run([sys.executable, "-m", "natbench", "gpu-check", "--device", "cpu", "--budget", "400",
                            "--out", str(out), "--backend", "natten,sdpa", "--set", "resolution=32",
                            "--set", "heads=1"], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["ok"] * 10
    for name in ("verify.json", "malformed.json", "smoke.jsonl", "kernel-sizes.jsonl", "models.jsonl", "blocks.jsonl",
                 "report.html", "profile.json", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "plots").glob("*.png"))
    verify = json.loads((out / "verify.json").read_text())
    assert verify and all(row["check"] == "pass" for row in verify)
    assert {row["dtype"] for row in verify} == {"float32", "float16", "bfloat16"}
    assert any(line.startswith("medians at float16 fwd, K=31x31") for line in summary["findings"])
    assert any(line.startswith("nat_tiny on natten, batch 1 fwd:") for line in summary["findings"])
    assert "every step passed" in child.stdout
