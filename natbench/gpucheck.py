"""natbench gpu-check: everything worth knowing about natbench on a GPU, in one bounded run.

A GPU may be lent for minutes, so the check is one command with a time budget that it enforces:
build the CUDA kernels, feed malformed inputs to the ops on CUDA, verify every backend, run the
smoke suite and a short kernel-size sweep in float16 and bfloat16, then write a report, plots and a
profile of one case, and a summary. Each step runs as a child process (its own session, so that a
hung CUDA call is killed with its workers) under a timeout: its cap, and never more than what is
left of the budget after the floors of the steps after it. A step that overruns is killed and
recorded, whatever it wrote is kept, and the next step goes on. Everything lands in one folder,
results/gpu/<gpu-name>/ by default.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from natbench import timing
from natbench.paths import PACKAGE_ROOT

BUDGET_S = 480.0  # 8 minutes on an H100
# The short sweep: NAT's kernel sizes, from the smallest to one past the 56x56 suite's middle.
KERNEL_SIZES = "3,7,13,21,31"
NO_CUDA_EXIT = 2


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple         # the child's command line
    cap_s: float        # the most it may take
    floor_s: float = 5.0  # what the steps before it leave for it; under half of it, and it is skipped
    stdout: str | None = None  # a file (in the output folder) for its stdout, else its log
    skip: str | None = None    # why it does not run here


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed, timeout, skipped
    seconds: float = 0.0
    timeout_s: float | None = None
    exit_code: int | None = None
    note: str = ""


def slug(name: str) -> str:
    """A folder name of a device's name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def device_name(device: str) -> str | None:
    """The GPU's name (None without CUDA), or the CPU's model for a rehearsal on the CPU."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    from natbench.env import cpu_model

    return cpu_model()


def _natbench(*args: str) -> tuple:
    return (sys.executable, "-m", "natbench", *args)


def plan(device: str, out: Path, backends: str | None = None, sets: tuple = ()) -> list[Step]:
    """The steps of a check on `device`, writing under `out`. backends and sets (--set AXIS=...)
    narrow the suites, for a rehearsal on the CPU."""
    overrides = tuple(a for s in sets for a in ("--set", s))
    narrow = (*(("--backend", backends) if backends else ()), *overrides)
    fuzzer = PACKAGE_ROOT.parent / "tests" / "backends" / "malformed.py"
    if not fuzzer.exists():
        fuzzer_skip = "the malformed-input test ships with a checkout, not the package"
    elif importlib.util.find_spec("hypothesis") is None:
        fuzzer_skip = "hypothesis is not installed (pip install -e '.[dev]')"
    else:
        fuzzer_skip = None
    sweep = out / "kernel-sizes.jsonl"
    return [
        Step("build", _natbench("build"), cap_s=150, floor_s=30),
        Step("malformed inputs", (sys.executable, "-m", "tests.backends.malformed", "--device", device,
                                  "--examples", "4", "--json", str(out / "malformed.json")),
             cap_s=40, skip=fuzzer_skip),
        Step("verify", _natbench("verify", "--suite", "smoke", "--device", device,
                                 "--dtype", "float32,float16,bfloat16", "--json", *narrow),
             cap_s=90, floor_s=15, stdout="verify.json"),
        Step("smoke", _natbench("run", "--suite", "smoke", "--device", device, "--quiet",
                                "--out", str(out / "smoke.jsonl"), *narrow), cap_s=45, floor_s=10),
        Step("kernel sizes, float16 and bfloat16",
             _natbench("run", "--suite", "kernel-sizes", "--device", device, "--dtype", "float16,bfloat16",
                       "--set", f"kernel_size={KERNEL_SIZES}", "--rounds", "3", "--max-time", "0.6",
                       "--quiet", "--out", str(sweep), *narrow), cap_s=100, floor_s=15),
        # Whole networks: NAT-T, DiNAT-T and Swin-T at batch 8 (a rehearsal on the CPU: one 64x64
        # image, inference, to stay inside its budget).
        Step("models", _natbench("run", "--suite", "models", "--device", device, "--rounds", "3",
                                 "--max-time", "1", "--quiet", "--out", str(out / "models.jsonl"), *narrow,
                                 *(("--set", "image_size=64", "--set", "batch=1", "--pass", "fwd")
                                   if device == "cpu" else ("--set", "batch=8"))), cap_s=60, floor_s=10),
        # The paper's layer comparison, NA pair against Swin pair at the first stage's shape, from
        # 56x56 to 896x896 (the rehearsal: 14x14).
        Step("blocks", _natbench("run", "--suite", "blocks", "--device", device, "--rounds", "3",
                                 "--max-time", "1", "--quiet", "--out", str(out / "blocks.jsonl"), *narrow,
                                 "--set", "model=nat_pair,swin_pair",
                                 "--set", "image_size=14" if device == "cpu" else "image_size=56,224,896"),
             cap_s=40, floor_s=5),
        Step("report", _natbench("report", str(sweep), "--out", str(out / "report.html")), cap_s=20),
        Step("plots", _natbench("plot", str(sweep), "--out", str(out / "plots")), cap_s=30),
        Step("profile", _natbench("profile", "--backend", "natten", "--device", device,
                                  "--dtype", "float32" if device == "cpu" else "float16",
                                  "--out", str(out / "profile"), "--json", *overrides),
             cap_s=40, floor_s=10, stdout="profile.json"),
    ]


def run_steps(steps: list[Step], budget_s: float, execute: Callable[[Step, float], Outcome]) -> list[Outcome]:
    """Each step under its timeout: its cap, within what the budget has left once the floors of
    the steps after it are kept back. A step left under half its own floor (the steps before it
    overran, or the budget is smaller than the floors) is skipped: the budget is spent.
    timing.CLOCK keeps the time (a fake one in tests)."""
    deadline = timing.CLOCK.now() + budget_s
    outcomes = []
    for i, step in enumerate(steps):
        if step.skip:
            outcomes.append(Outcome(step.name, "skipped", note=step.skip))
            continue
        reserved = sum(later.floor_s for later in steps[i + 1:] if not later.skip)
        timeout = min(step.cap_s, deadline - timing.CLOCK.now() - reserved)
        if timeout < step.floor_s / 2:
            outcomes.append(Outcome(step.name, "skipped", note=f"the {budget_s:.0f} s budget is spent"))
            continue
        begin = timing.CLOCK.now()
        outcome = execute(step, timeout)
        outcome.seconds, outcome.timeout_s = timing.CLOCK.now() - begin, timeout
        outcomes.append(outcome)
    return outcomes


def subprocess_executor(out: Path) -> Callable[[Step, float], Outcome]:
    """Runs a step as a child process in its own session, from the checkout's root (where the
    fuzzer's module path resolves), its output to a log in `out`; on timeout the whole session
    (the child and its measuring workers) is killed."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def execute(step: Step, timeout: float) -> Outcome:
        log = logs / f"{slug(step.name)}.log"
        with open(log, "w") as err, open(out / step.stdout if step.stdout else log, "a") as stdout:
            child = subprocess.Popen(step.argv, stdout=stdout, stderr=err if step.stdout else subprocess.STDOUT,
                                     cwd=PACKAGE_ROOT.parent, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                code = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return Outcome(step.name, "timeout", note=f"killed at its {timeout:.0f} s limit; log {log.name}")
        if code == 0:
            return Outcome(step.name, "ok", exit_code=0)
        return Outcome(step.name, "failed", exit_code=code, note=_last_line(log))

    return execute


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


@dataclass
class Summary:
    device: str
    budget_s: float
    seconds: float
    steps: list = field(default_factory=list)
    findings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step["status"] in ("ok", "skipped") for step in self.steps) and not any(
            step["status"] == "skipped" and "budget" in step["note"] for step in self.steps)

    def markdown(self) -> str:
        lines = [f"# gpu-check on {self.device}", "",
                 f"{self.seconds:.0f} s of a {self.budget_s:.0f} s budget: "
                 f"{'every step passed' if self.ok else 'NOT every step passed'}.", "",
                 "| step | status | seconds | limit | note |", "| --- | --- | --- | --- | --- |"]
        for s in self.steps:
            limit = "-" if s["timeout_s"] is None else f"{s['timeout_s']:.0f}"
            lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {limit} | {s['note']} |")
        lines += ["", "## Findings", ""] + [f"- {finding}" for finding in self.findings]
        return "\n".join(lines) + "\n"


def findings(out: Path) -> list[str]:
    """What the steps' files say, one line each: failed checks, the fuzzer's violations, the rows
    measured, and each backend's median latency at each kernel size (lowest first; the report
    says which differences hold)."""
    lines = []
    verify = _json(out / "verify.json")
    if isinstance(verify, list):
        failed = [r for r in verify if r.get("check") == "fail" or r.get("status") in ("error", "crashed", "timeout")]
        lines.append(f"verify: {sum(r.get('check') == 'pass' for r in verify)} checks passed, {len(failed)} failed, "
                     f"{sum(r.get('status') == 'skipped' for r in verify)} skipped")
        lines += [f"verify FAILED: {r['backend']} {r['case_key']}: {r.get('status')} {r.get('reason') or ''} "
                  f"max abs error {r.get('max_abs_error')}" for r in failed[:10]]
    tally = _json(out / "malformed.json")
    if isinstance(tally, dict):
        lines.append(f"malformed inputs: {sum(tally['calls'].values())} calls, "
                     f"{len(tally['violations'])} violations")
        lines += [f"malformed inputs VIOLATION: {v}" for v in tally["violations"][:10]]
    for name in ("smoke.jsonl", "kernel-sizes.jsonl", "models.jsonl", "blocks.jsonl"):
        if (out / name).exists():
            lines += _results_lines(out / name)
    profile = _json(out / "profile.json")
    if isinstance(profile, dict) and profile.get("ops"):
        top = max(profile["ops"], key=lambda op: op.get("self_s_per_step") or 0)
        lines.append(f"profile: {profile['backend']} {profile['case_key']}: {profile['self_sum_s'] * 1e3:.3f} ms "
                     f"self time a step on {profile['device']}, most in {top.get('name')}")
    return lines


def _results_lines(path: Path) -> list[str]:
    from natbench import store

    rows = store.load(path).rows
    statuses = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    lines = [f"{path.name}: {len(rows)} rows ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); "
             f"{sum(r.get('check') == 'fail' for r in rows)} failed their check"]
    if path.name.startswith("models"):
        lines += [f"{r['model']} on {r['backend']}, batch {r['batch']} {r['pass']}: {r['images_per_s']:.1f} images/s"
                  for r in sorted(rows, key=lambda r: (r["pass"], r["model"], r["backend"]))
                  if r["status"] == "ok" and r.get("check") != "fail"]
    if path.name.startswith("kernel-sizes"):
        medians = {}
        for row in rows:
            if row["status"] == "ok" and row.get("check") != "fail" and row.get("latency_ms_median") is not None:
                key = (row["dtype"], row["pass"], tuple(row["kernel_size"]))
                medians.setdefault(key, []).append((row["latency_ms_median"], row["backend"]))
        lines += [f"medians at {dtype} {pass_}, K={'x'.join(map(str, kernel))}: "
                  + ", ".join(f"{name} {ms:.3f} ms" for ms, name in sorted(found))
                  for (dtype, pass_, kernel), found in sorted(medians.items())]
    return lines


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check(device: str, out: Path, budget_s: float, backends: str | None, sets: tuple,
          echo: Callable[[str], None]) -> Summary:
    """Every step of the check on `device` within `budget_s`, the summary written to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    begin = timing.CLOCK.now()
    steps = plan(device, out, backends, sets)
    execute = subprocess_executor(out)

    def announced(step: Step, timeout: float) -> Outcome:
        echo(f"gpu-check: {step.name} (up to {timeout:.0f} s)")
        outcome = execute(step, timeout)
        echo(f"gpu-check: {step.name}: {outcome.status}{' - ' + outcome.note if outcome.note else ''}")
        return outcome

    outcomes = run_steps(steps, budget_s, announced)
    summary = Summary(device_name(device) or device, budget_s, timing.CLOCK.now() - begin,
                      [asdict(o) for o in outcomes], findings(out))
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    (out / "summary.md").write_text(summary.markdown())
    return summary
