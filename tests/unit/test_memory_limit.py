"""A CPU run caps its address space, so a case that needs more memory than the machine has fails
inside the case (an `oom` row) instead of the kernel's OOM killer ending the run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from natbench.env import memory_cap

pytestmark = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")

# In a child process: the cap must not outlive the test.
CHILD = """
import contextlib, os, resource, torch
from natbench.env import memory_cap
from natbench.runner import _is_oom
# a cap inherited from the test process is lifted first
resource.setrlimit(resource.RLIMIT_AS, (resource.getrlimit(resource.RLIMIT_AS)[1],) * 2)
available = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable:"))
# Two blocks, each smaller than the machine's memory, together larger than what is available:
# Linux's default overcommit grants both (untouched pages), as it does a sweep's growing cases.
half = available // 2 + (1 << 28)
cap = memory_cap("cpu") if os.environ.get("CAP") == "1" else contextlib.nullcontext({})
with cap as did:
    print(did.get("memory_limit", "no cap"))
    try:
        blocks = [torch.empty(half, dtype=torch.uint8) for _ in range(2)]
        print("allocated")
    except RuntimeError as error:
        print("oom" if _is_oom(error) else f"other: {error}")
print("lifted" if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY else "still capped")
"""


def _child(cap: bool) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CAP": "1" if cap else "0"})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_blocks_beyond_available_memory_are_an_oom_under_the_cap_and_the_cap_ends_with_the_run():
    lines = _child(cap=True)
    assert lines[0].startswith("address space capped at")
    # after the run nothing inherits the cap (headless chromium, rendering a report, needs far
    # more address space than memory)
    assert lines[1:] == ["oom", "lifted"]


OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory")


@pytest.mark.skipif(OVERCOMMIT.exists() and OVERCOMMIT.read_text().strip() == "2",
                    reason="strict overcommit refuses the blocks by itself")
def test_without_the_cap_linux_grants_the_same_blocks():
    # what the cap prevents: overcommit hands out both blocks, and touching them would summon
    # the OOM killer
    assert _child(cap=False)[1] == "allocated"


def test_cuda_runs_and_the_opt_out_are_not_capped(monkeypatch):
    with memory_cap("cuda") as did:
        assert did["memory_limit"].startswith("none (cuda run")
    monkeypatch.setattr("natbench.env.NO_MEMORY_LIMIT", True)
    with memory_cap("cpu") as did:
        assert did["memory_limit"] == "none (NATBENCH_NO_MEMORY_LIMIT=1)"
