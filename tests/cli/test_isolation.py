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
