"""natbench merge: join the shard files of a sharded run into one results file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from natbench.cli import options


def merge(files: Annotated[list[Path], typer.Argument(help="The shard files (natbench run --shard I/N --out FILE).")],
          out: Annotated[Path, typer.Option(help="The merged results file to write.")],
          allow_missing: Annotated[bool, typer.Option(help="Merge even where pairs of the suite have no row in any file (they are listed, and recorded in the header).")] = False,
          force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
          json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Join shards into one results file that compare, plot, report, export and gate read."""
    from natbench.console import Sink
    from natbench.merge import merge as join

    sink = Sink(json_, quiet)
    merged = join(files, out, allow_missing, force)
    if json_:
        sink.json({"out": str(merged.path), "rows": merged.rows, "shards": merged.shards,
                   "missing": merged.missing})
        return
    if merged.missing:
        listed = "; ".join(f"{b} {c}" for c, b in merged.missing[:5])
        sink.warn(f"{len(merged.missing)} pairs have no row: {listed}{' ...' if len(merged.missing) > 5 else ''}")
    sink.info(f"merged {len(files)} files (shards {', '.join(merged.shards)}), {merged.rows} rows: {merged.path}")
