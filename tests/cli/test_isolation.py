"""Measurements in worker processes: a backend that segfaults, aborts, exits, hangs holding the
GIL or exhausts memory costs its own rows, and the sweep goes on with a fresh worker."""

import pytest

from natbench import store

CRASHING = '''
import ctypes
import os
import signal

import torch

from natbench.plugin import Backend, Capabilities


class _Crashing(Backend):
    summary = "crashes on purpose"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        self.crash()
        return v


class Segfault(_Crashing):
    name = "test-segfault"

    def crash(self):
        os.kill(os.getpid(), signal.SIGSEGV)


class Abort(_Crashing):
    name = "test-abort"

    def crash(self):
        os.abort()


class Exits(_Crashing):
    name = "test-exit"

    def crash(self):
        print("giving up", flush=True)
        os._exit(3)


class HangsHoldingTheGil(_Crashing):
    name = "test-hang"

    def crash(self):
        ctypes.PyDLL(None).sleep(600)  # PyDLL keeps the GIL through the C call


class Hoards(_Crashing):
    name = "test-hoard"

    def crash(self):
        torch.empty(1 << 46, dtype=torch.uint8)  # past any memory cap
'''
CASE = ["--suite", "smoke", "--device", "cpu", "--set", "resolution=8", "--set", "kernel_size=3",
        "--pass", "fwd", "--max-time", "0.05", "--rounds", "2"]


@pytest.mark.worker
def test_crashing_backends_cost_their_own_rows_and_the_sweep_goes_on(cli, tmp_path):
    plugin = tmp_path / "crashing.py"
    plugin.write_text(CRASHING)
    out = tmp_path / "r.jsonl"
    args = [*CASE, "--backend", "torch,test-segfault,test-abort,test-exit,test-hang,test-hoard,swin",
            "--backend-module", str(plugin), "--call-timeout", "3", "--out", out]
    code, _, stderr = cli("run", *args)
    assert code == 0, stderr
    rows = {r["backend"]: r for r in store.load(out).rows}
    assert {b: r["status"] for b, r in rows.items()} == {
        "torch": "ok", "test-segfault": "crashed", "test-abort": "crashed", "test-exit": "crashed",
        "test-hang": "timeout", "test-hoard": "oom", "swin": "ok"}
    assert "signal 11 (SIGSEGV)" in rows["test-segfault"]["reason"]
    assert "signal 6 (SIGABRT)" in rows["test-abort"]["reason"]
    assert "exit code 3" in rows["test-exit"]["reason"] and "giving up" in rows["test-exit"]["reason"]
    assert "no answer within 3 s" in rows["test-hang"]["reason"]
    assert rows["torch"]["rounds"] == rows["swin"]["rounds"] == 2
    assert rows["torch"]["check"] == rows["swin"]["check"] == "pass"
    # a resume measures nothing new (--retry-crashed would: tests/unit/test_store.py)
    before = len(store.load(out).rounds)
    assert cli("run", "--out", out, "--resume")[0] == 0
    assert len(store.load(out).rounds) == before


HANGS = '''
import ctypes

from natbench.plugin import Backend, Capabilities


class Hangs(Backend):
    name = "test-hang-long"
    summary = "hangs holding the GIL"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        ctypes.PyDLL(None).sleep(600)
        return v
'''


@pytest.mark.worker
def test_a_worker_dies_with_its_supervisor_even_in_the_middle_of_a_call(tmp_path):
    """A supervisor killed outright (SIGKILL: the OOM killer, a CI job's timeout) takes its
    worker with it, though the worker is inside a call and never reads its closed stdin."""
    import os
    import signal
    import subprocess
    import sys
    import time

    plugin = tmp_path / "hangs.py"
    plugin.write_text(HANGS)
    supervisor = subprocess.Popen([sys.executable, "-m", "natbench", "run", "--suite", "smoke",
                                   "--backend", "test-hang-long", "--backend-module", str(plugin),
                                   "--set", "kernel_size=3", "--pass", "fwd", "--call-timeout", "600",
                                   "--out", str(tmp_path / "r.jsonl"), "--quiet"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children(pid):
        found = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                found += [int(c) for c in file.read().split()]
        return found

    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and not workers:
        time.sleep(0.5)
        workers = [c for c in children(supervisor.pid)
                   if "natbench.worker" in open(f"/proc/{c}/cmdline").read()]
    assert workers, "no worker started"
    results = tmp_path / "r.jsonl"
    while time.monotonic() < deadline and '"record":"calibration"' not in (results.read_text() if results.exists() else ""):
        time.sleep(0.5)
    time.sleep(2)  # the calibration is written: the worker is inside the hanging call
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait()
    time.sleep(2)
    for pid in workers:
        alive = os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]
        assert not alive, f"worker {pid} outlived its supervisor"
