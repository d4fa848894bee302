"""Where measurements run: a worker process that the session supervises, so that a kernel that
segfaults, aborts, hangs holding the GIL, exhausts memory or leaves a CUDA context broken costs
one row (`crashed` or `timeout`), not the sweep.

The session sends requests (measure a pair's round, compile ahead, calibrate, probe) and waits for
each with a deadline; a worker that dies or misses its deadline is killed and replaced by a fresh
one, which is given the run's set-up again. `InProcess` runs the same requests in this process
(`NATBENCH_ISOLATION=none`): for debugging a backend with pdb, and for tests that watch a fake
backend's state.

Messages are pickles with a length in front, over the worker's stdin and a private copy of its
stdout; the worker's fd 1 is pointed at its stderr, so that whatever a backend prints cannot
corrupt them. Its stderr is passed on to this process's and its last lines kept for the reason of
a crash.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

from natbench.errors import NatbenchError
from natbench.paths import child_python

_LENGTH = struct.Struct("<Q")
_TAIL_LINES = 20


class WorkerDied(NatbenchError):
    """The worker ended without answering: a signal, an abort, an exit."""


class WorkerTimeout(NatbenchError):
    """The worker did not answer before its deadline and was killed."""


# ---- what runs in the worker (and, for InProcess, here) ----

class _Measurer:
    """The run's state where measurements happen, and the requests it answers."""

    def __init__(self, setup: dict):
        from natbench import backends
        from natbench.runner import RunContext

        backends._REGISTRY.update(setup["registry"])
        for spec in setup["modules"]:
            backends.load_module(spec)
        self.context = RunContext(setup["policy"])

    def answer(self, kind: str, args: tuple):
        from natbench import calibrate, runner
        from natbench.env import cpu_usage, load_between

        if kind == "context":
            compile_s, calibrations = args
            self.context.compile_s, self.context.calibrations = compile_s, calibrations
            return None
        if kind in ("run_pair", "time_again"):
            # what else ran meanwhile, read where the measuring runs (this process's CPU is its own)
            usage = cpu_usage()
            record = (runner.run_pair(*args[:2], self.context) if kind == "run_pair" else
                      runner.time_again(*args[:2], self.context, args[2]))
            return {**record, **load_between(usage, cpu_usage())}
        if kind == "check":  # natbench verify: the correctness check alone
            return runner.run_pair(*args, self.context, timed=False)
        if kind == "compile_ahead":
            return runner.compile_ahead(*args)
        if kind == "calibrate":
            return calibrate.calibrate(*args).to_record()
        if kind == "probe":
            return calibrate.probe(*args)
        raise ValueError(f"unknown request {kind!r}")


def _environment(stack: ExitStack, setup: dict) -> dict:
    """Enter what a measuring process holds for its life: glibc's pinned thresholds, the memory
    cap and torch's thread count; returns what the header records of them."""
    import torch

    from natbench.env import cpu_threads, memory_cap, pin_allocator

    done = dict(pin_allocator())
    done.update(stack.enter_context(memory_cap(setup["device"])))
    stack.enter_context(cpu_threads(setup["policy"].threads))
    return {**done, "torch_threads": torch.get_num_threads(), "isolation": setup["isolation"]}


def executor(setup: dict):
    """The measuring side of a run, by NATBENCH_ISOLATION: a supervised worker process, or this
    process."""
    return (InProcess if setup["isolation"] == "none" else Worker)(setup)


def measuring_setup(device: str, policy) -> dict:
    """What a measuring process needs to measure as this one would: the backends registered here
    (built-in, plugins, a test's), the plugin modules loaded, the policy and the device."""
    from natbench import backends, env

    return {"registry": dict(backends._REGISTRY), "modules": backends.loaded_modules(),
            "policy": policy, "device": device, "isolation": env.ISOLATION}


def _die_with_parent() -> None:
    """Asks Linux to kill this process when its supervisor dies (prctl PR_SET_PDEATHSIG): a
    supervisor killed in the middle of a call (SIGKILL, the OOM killer, a CI job's timeout)
    would otherwise leave the worker computing, holding the machine and its memory. Between
    calls the worker already ends on its closed stdin."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before the request took effect
        os._exit(1)


def main() -> None:
    """The worker process: set up, then answer requests until stdin closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    with ExitStack() as stack:
        setup = _read(requests)
        environment = _environment(stack, setup)
        measurer = _Measurer(setup)
        _write(channel, ("ok", environment))
        while True:
            try:
                kind, args = _read(requests)
            except EOFError:
                return
            try:
                _write(channel, ("ok", measurer.answer(kind, args)))
            except Exception as error:  # natbench's own failure here, not the backend's
                import traceback

                _write(channel, ("failed", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


def _write(stream, message) -> None:
    data = pickle.dumps(message)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _read(stream):
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    return pickle.loads(stream.read(_LENGTH.unpack(head)[0]))


# ---- the supervisor's side ----

class Worker:
    """A worker process and its supervision: requests with deadlines, a fresh process after a
    death or a timeout, the last lines of its stderr for the reason."""

    def __init__(self, setup: dict):
        self.setup = setup
        self.environment: dict = {}
        self.context: tuple = ({}, {})
        self.process: subprocess.Popen | None = None
        self.stderr: threading.Thread | None = None
        self.tail: collections.deque = collections.deque(maxlen=_TAIL_LINES)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.process = subprocess.Popen(child_python("from natbench.worker import main; main()"),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.tail.clear()
        self.stderr = threading.Thread(target=self._pass_stderr, args=(self.process.stderr,), daemon=True)
        self.stderr.start()
        _write(self.process.stdin, self.setup)
        self.environment = self._receive(None)
        if any(self.context):
            self.call("context", *self.context)

    def _pass_stderr(self, stream) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace")
            self.tail.append(text.rstrip("\n"))
            sys.stderr.write(text)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def call(self, kind: str, *args, timeout: float | None = None):
        """Send a request and wait for its answer, at most `timeout` seconds (None: no limit).
        Raises WorkerDied or WorkerTimeout; either way the worker is gone and `restart` brings a
        fresh one."""
        if kind == "context":
            self.context = args
        try:
            _write(self.process.stdin, (kind, args))
        except (BrokenPipeError, OSError):
            raise self._died() from None
        return self._receive(timeout)

    def _receive(self, timeout: float | None):
        stream = self.process.stdout
        deadline = None if timeout is None else time.monotonic() + timeout
        head = self._read_exactly(stream, _LENGTH.size, deadline, timeout)
        status, value = pickle.loads(self._read_exactly(stream, _LENGTH.unpack(head)[0], deadline, timeout))
        if status == "failed":
            raise NatbenchError(f"the measuring worker failed: {value}")
        return value

    def _read_exactly(self, stream, size: int, deadline: float | None, timeout: float | None) -> bytes:
        data = b""
        while len(data) < size:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.kill()
                raise WorkerTimeout(f"no answer within {timeout:.0f} s (--call-timeout): the worker "
                                    f"was killed")
            ready, _, _ = select.select([stream], [], [], left)
            if not ready:
                continue
            chunk = os.read(stream.fileno(), size - len(data))
            if not chunk:
                raise self._died()
            data += chunk
        return data

    def _died(self) -> WorkerDied:
        self.process.wait()
        code = self.process.returncode
        if code < 0:
            name = signal.Signals(-code).name
            how = f"signal {-code} ({name})" + (", likely the kernel's out-of-memory killer"
                                                 if name == "SIGKILL" else "")
        else:
            how = f"exit code {code}"
        self.stderr.join(timeout=1)  # its last lines: the pipe closes with the process
        last = " | ".join(line for line in list(self.tail)[-5:] if line.strip())
        self.process = None
        return WorkerDied(f"the worker died: {how}" + (f"; its last words: {last}" if last else ""))


# An error that leaves a CUDA context unusable for anything after it: the worker is replaced.
_STICKY = re.compile(r"illegal memory access|device-side assert|CUDA error: (unspecified launch failure|"
                     r"an illegal instruction)|cudaErrorIllegalAddress", re.IGNORECASE)


def measure(worker, kind: str, *args, row: dict, timeout: float) -> dict:
    """A request that measures (or checks) a pair, answered with its record: a worker that dies
    or misses the deadline turns it into `row` with status `crashed` or `timeout` and the reason,
    and a fresh worker takes over, as it does after an error that breaks a CUDA context."""
    try:
        record = worker.call(kind, *args, timeout=timeout)
    except (WorkerDied, WorkerTimeout) as failure:
        worker.restart()
        return {**row, "status": "timeout" if isinstance(failure, WorkerTimeout) else "crashed",
                "reason": str(failure)}
    if record["status"] == "error" and _STICKY.search(record.get("reason") or ""):
        worker.restart()
    return record


class InProcess:
    """The same requests, answered in this process (NATBENCH_ISOLATION=none): no protection from
    a crashing backend, and a debugger sees it."""

    def __init__(self, setup: dict):
        self.setup = setup
        self.stack = ExitStack()

    def __enter__(self) -> InProcess:
        self.environment = _environment(self.stack, self.setup)
        self.measurer = _Measurer(self.setup)
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def call(self, kind: str, *args, timeout: float | None = None):
        return self.measurer.answer(kind, args)

    def restart(self) -> None:
        pass

    def kill(self) -> None:
        pass


if __name__ == "__main__":
    main()
