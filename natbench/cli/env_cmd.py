"""natbench env: the environment header every run records."""

from __future__ import annotations

from natbench.cli import options


def env(device: options.Device = "auto", threads: options.Threads = None,
        json_: options.Json = False) -> None:
    """Machine, GPU state (via NVML), software versions and natbench's commit. Compiles nothing:
    the extension's fields are those of its last build."""
    from natbench.console import Sink, key_value_table
    from natbench.env import collect, cpu_threads

    with cpu_threads(options.threads_or_default(threads)):  # as a run records it
        header = collect(options.resolve_device(device), build_extension=False)
    sink = Sink(json_)
    if json_:
        sink.json(header)
    else:
        sink.table(key_value_table({**header["env"], "command": header["command"]}, "environment"))
