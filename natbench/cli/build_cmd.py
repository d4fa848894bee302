"""natbench build: compile the kernels in csrc/ and say where and how long it took."""

from __future__ import annotations

from typing import Annotated

import typer


def build(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the compiler's output.")] = False) -> None:
    """Compile csrc/ as a torch extension (ninja, cached in torch's extensions directory)."""
    from natbench.console import Sink, key_value_table
    from natbench.errors import NatbenchError
    from natbench.extension import build as compile_extension

    result = compile_extension(verbose)
    if not result.ok:
        error = NatbenchError(result.reason)
        error.exit_code = 1
        raise error
    Sink().table(key_value_table({"directory": result.directory,
                                  "seconds": f"{result.seconds:.1f} (a cached build loads in well under a second)",
                                  "cflags": " ".join(result.cflags),
                                  "ldflags": " ".join(result.ldflags),
                                  "CUDA kernels": "built" if result.cuda else f"not built: {result.cuda_reason}"}, "natbench extension built"))
