"""A CPU run caps its address space, so a case that needs more memory than the machine has fails
inside the case (an `oom` row) instead of the kernel's OOM killer ending the run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from natbench.env import limit_memory

pytestmark = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")

# In a child process: the cap must not outlive the test.
CHILD = """
import os, resource, torch
from natbench.env import limit_memory
from natbench.runner import _is_oom
# a cap inherited from the test process (an in-process `natbench run` sets one) is lifted first
resource.setrlimit(resource.RLIMIT_AS, (resource.getrlimit(resource.RLIMIT_AS)[1],) * 2)
available = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable:"))
if os.environ.get("CAP") == "1":
    print(limit_memory("cpu")["memory_limit"])
# Two blocks, each smaller than the machine's memory, together larger than what is available:
# Linux's default overcommit grants both (untouched pages), as it does a sweep's growing cases.
half = available // 2 + (1 << 28)
try:
    blocks = [torch.empty(half, dtype=torch.uint8) for _ in range(2)]
    print("allocated")
except RuntimeError as error:
    print("oom" if _is_oom(error) else f"other: {error}")
"""


def _child(cap: bool) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CAP": "1" if cap else "0"})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_blocks_beyond_available_memory_are_an_oom_under_the_cap():
    lines = _child(cap=True)
    assert lines[0].startswith("address space capped at")
    assert lines[-1] == "oom"


OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory")


@pytest.mark.skipif(OVERCOMMIT.exists() and OVERCOMMIT.read_text().strip() == "2",
                    reason="strict overcommit refuses the blocks by itself")
def test_without_the_cap_linux_grants_the_same_blocks():
    # what the cap prevents: overcommit hands out both blocks, and touching them would summon
    # the OOM killer
    assert _child(cap=False)[-1] == "allocated"


def test_cuda_runs_and_the_opt_out_are_not_capped(monkeypatch):
    assert limit_memory("cuda")["memory_limit"].startswith("none (cuda run")
    monkeypatch.setattr("natbench.env.NO_MEMORY_LIMIT", True)
    assert limit_memory("cpu")["memory_limit"] == "none (NATBENCH_NO_MEMORY_LIMIT=1)"
