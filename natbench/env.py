"""The environment header of every run: machine, GPU state, software versions, command.

natbench never changes a GPU's clocks or settings: it reads them through NVML (nvidia-ml-py).
All NATBENCH_* environment variables (and GITHUB_STEP_SUMMARY) are read here.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from natbench import __version__

DEBUG = os.environ.get("NATBENCH_DEBUG") == "1"
RESULTS_DIR = Path(os.environ.get("NATBENCH_RESULTS_DIR", "results/runs"))
KEEP_MALLOC = os.environ.get("NATBENCH_KEEP_MALLOC") == "1"
NO_MEMORY_LIMIT = os.environ.get("NATBENCH_NO_MEMORY_LIMIT") == "1"
# Where measurements run: "process" (a supervised worker process, natbench/worker.py) or "none"
# (this process: for a debugger, or tests that watch a fake backend's state).
ISOLATION = os.environ.get("NATBENCH_ISOLATION", "process")
# GitHub Actions' job summary file: `natbench gate` appends its Markdown summary there.
GITHUB_STEP_SUMMARY = os.environ.get("GITHUB_STEP_SUMMARY")

# glibc's malloc serves large blocks with fresh mmaps whose pages fault in on every call, and
# moves that threshold with the history of frees: the same call measured 14 ms in one process and
# 30 ms in another. Pinning the thresholds makes large blocks come from the reused heap in every
# process, as in a steady training loop.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_PINNED_BYTES = 1 << 30


def pin_allocator() -> dict:
    """Pin glibc's mmap and trim thresholds (unless NATBENCH_KEEP_MALLOC=1); says what it did."""
    if KEEP_MALLOC:
        return {"malloc": "glibc defaults (NATBENCH_KEEP_MALLOC=1)"}
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        pinned = libc.mallopt(_M_MMAP_THRESHOLD, _PINNED_BYTES) and \
            libc.mallopt(_M_TRIM_THRESHOLD, _PINNED_BYTES)
    except (OSError, AttributeError):
        return {"malloc": "not glibc: thresholds left as they are"}
    return {"malloc": f"glibc mmap and trim thresholds pinned at {_PINNED_BYTES} bytes"
            if pinned else "glibc refused mallopt: thresholds left as they are"}


@contextmanager
def cpu_threads(threads: int | str):
    """torch's intra-op thread count set to `threads` for the block ("auto": left at torch's
    default), then restored. Calibration, the header and every row of a run see the same count."""
    import torch

    before = torch.get_num_threads()
    if threads != "auto":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def memory_cap(device: str):
    """While a run measures: its address space capped at what it maps now plus the memory the
    machine has available (CPU runs, Linux; unless NATBENCH_NO_MEMORY_LIMIT=1). Yields what it
    did, for the header; the previous limit comes back on exit, so nothing launched after the
    run (a browser rendering a report, say) inherits the cap.

    Linux overcommits: a case that needs more memory than the machine has gets its allocations,
    then the kernel's OOM killer ends the whole run. Under the cap the allocation fails in the
    case itself, which becomes an `oom` row, and the sweep goes on. CUDA runs are left alone:
    the CUDA driver reserves far more address space than it uses.
    """
    if NO_MEMORY_LIMIT:
        yield {"memory_limit": "none (NATBENCH_NO_MEMORY_LIMIT=1)"}
        return
    if device != "cpu":
        yield {"memory_limit": f"none ({device} run: its driver reserves address space)"}
        return
    try:
        import resource

        page = os.sysconf("SC_PAGE_SIZE")
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * page
        available = next(int(line.split()[1]) * 1024
                         for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemAvailable:"))
        previous = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError, StopIteration):
        yield {"memory_limit": "none (no /proc or setrlimit here)"}
        return
    soft, hard = previous
    limit = mapped + available if hard == resource.RLIM_INFINITY else min(mapped + available, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield {"memory_limit": f"address space already capped at {soft} bytes"}
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield {"memory_limit": f"address space capped at {limit} bytes ({mapped} mapped + "
                               f"{available} available): a case that needs more is an oom row"}
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo"),
                 cache_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict:
    """What tells apart two CPUs that a hypervisor shows under one name ("AMD EPYC"): family,
    model and stepping numbers, cache sizes, and whether the kernel runs under a hypervisor.
    Fields it cannot read are left out."""
    identity: dict = {}
    try:
        first = cpuinfo.read_text().split("\n\n", 1)[0]
    except OSError:
        first = ""
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    for key, name in (("cpu family", "cpu_family"), ("model", "cpu_model_number"),
                      ("stepping", "cpu_stepping")):
        if info.get(key, "").isdigit():
            identity[name] = int(info[key])
    if "flags" in info:
        identity["cpu_virtualized"] = "hypervisor" in info["flags"].split()
    caches = {}
    for index in sorted(cache_dir.glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        caches[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    if caches:
        identity["cpu_caches"] = caches
    return identity


def cpu_usage(stat: Path = Path("/proc/stat")) -> tuple[float, float, float] | None:
    """(busy, stolen, own) CPU seconds so far: the machine's busy time over all its CPUs and the
    time a hypervisor stole from them (the first line of /proc/stat), and this process's (every
    thread). None where /proc/stat cannot be read."""
    try:
        fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    own = os.times()
    return (user + nice + system + irq + softirq) / tick, steal / tick, own.user + own.system


def load_between(before: tuple | None, after: tuple | None) -> dict:
    """What else ran on the machine between two cpu_usage readings: `other_cpu_s`, the CPU seconds
    of every other process and the kernel's own threads, and `stolen_cpu_s`, what the hypervisor
    took. Both count clock ticks (10 ms), so one reading may be off by a tick or two, either way
    (other_cpu_s may read -0.01); sums over many rounds average that out."""
    if before is None or after is None:
        return {}
    (busy0, steal0, own0), (busy1, steal1, own1) = before, after
    return {"other_cpu_s": round((busy1 - busy0) - (own1 - own0), 2),
            "stolen_cpu_s": round(steal1 - steal0, 2)}


def git_commit() -> str | None:
    """The checkout's commit, or None for an installed natbench (whose folder may lie inside
    some other repository, which is not natbench's commit)."""
    root = Path(__file__).resolve().parent.parent
    try:
        found = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                               capture_output=True, text=True, timeout=5).stdout.splitlines()
        if len(found) != 2 or Path(found[0]).resolve() != root:
            return None
        commit = found[1]
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}{'-dirty' if dirty else ''}" if commit else None


def gpu_state(index: int = 0) -> dict:
    """Name, driver, clocks, power, temperature and throttle reasons through NVML, or {} if none."""
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return {"nvml": f"unavailable: {error}"}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        clock = pynvml.nvmlDeviceGetClockInfo
        reasons = pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
        return {
            "gpu_name": pynvml.nvmlDeviceGetName(handle),
            "driver_version": pynvml.nvmlSystemGetDriverVersion(),
            "sm_clock_mhz": clock(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": clock(handle, pynvml.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000,
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "throttle_reasons": _throttle_names(pynvml, reasons),
        }
    except pynvml.NVMLError as error:
        return {"nvml": f"error: {error}"}
    finally:
        pynvml.nvmlShutdown()


def _throttle_names(pynvml, mask: int) -> list[str]:
    names = []
    for attr in dir(pynvml):
        if attr.startswith("nvmlClocksEventReason") and attr not in ("nvmlClocksEventReasonAll",
                                                                    "nvmlClocksEventReasonNone"):
            if mask & getattr(pynvml, attr):
                names.append(attr.removeprefix("nvmlClocksEventReason"))
    return sorted(names)


def machine_identity(device: str) -> dict:
    """The header fields that say which kind of machine measured a run on `device`: its device
    kind and the CPU's model, or on CUDA the GPU's name (None where torch sees no GPU)."""
    if device != "cuda":
        return {"device_kind": device, "cpu_model": cpu_model()}
    import torch

    return {"device_kind": device,
            "gpu_name": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def collect(device: str = "cpu", suite: str | None = None, build_extension: bool = True) -> dict:
    """Everything a reader needs to trust or reproduce a run. Imports torch. The compiled
    extension's fields come from building it, or with `build_extension=False` from its last
    build's stamp (nothing compiles; `extension_reason` says when it is not built yet)."""
    import torch

    env = {
        "natbench_version": __version__,
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        **cpu_identity(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "device_kind": device,
        "gpu_name": None,
    }
    from natbench.extension import NOT_BUILT, Build, build, status

    built = build() if build_extension else status() or Build(False, NOT_BUILT, 0.0, None)
    env.update(built.to_record())
    if device == "cuda" and torch.cuda.is_available():
        env.update(gpu_state(torch.cuda.current_device()))
        env["gpu_name"] = torch.cuda.get_device_name()
    return {
        "env": env,
        "suite": suite,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
