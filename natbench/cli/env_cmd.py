"""natbench env: the environment header every run records."""

from __future__ import annotations

from natbench.cli import options


def env(device: options.Device = "auto", json_: options.Json = False) -> None:
    """Machine, GPU state (via NVML), software versions and natbench's commit."""
    from natbench.console import Sink, key_value_table
    from natbench.env import collect

    header = collect(options.resolve_device(device))
    sink = Sink(json_)
    if json_:
        sink.json(header)
    else:
        sink.table(key_value_table({**header["env"], "command": header["command"]}, "environment"))
