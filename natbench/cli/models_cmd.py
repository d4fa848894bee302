"""natbench models: parameters and multiply-accumulates of the NAT, DiNAT and Swin networks."""

from __future__ import annotations

from typing import Annotated

import typer

from natbench.cli import options


def models(image_size: Annotated[int, typer.Option(min=32, help="Input height and width.")] = 224,
           json_: options.Json = False) -> None:
    """Each model's parameters and GMACs (multiply-accumulates, the papers' "FLOPs") counted by
    natbench, beside the published figures at 224x224 and the difference."""
    from rich.table import Table

    from natbench.console import Sink
    from natbench.models import CONFIGS, count

    sink = Sink(json_)
    records = []
    for name, config in CONFIGS.items():
        if config.pair:  # block pairs are the blocks suite's, not networks
            continue
        counted = count(name, image_size)
        records.append({"model": name, "family": config.family, "image_size": image_size,
                        "params": counted.params, "macs": counted.macs,
                        "published_params_m": config.params_m,
                        "published_gmacs": config.gmacs if image_size == 224 else None})
    if json_:
        sink.json(records)
        return
    table = Table(title=f"models at {image_size}x{image_size}: counted by natbench, and as published "
                        f"(at 224x224)", title_justify="left")
    for column in ("model", "params (M)", "published", "diff", "GMACs", "published", "diff"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in records:
        params, gmacs = r["params"] / 1e6, r["macs"] / 1e9
        published = r["published_gmacs"]
        table.add_row(r["model"], f"{params:.2f}", f"{r['published_params_m']:g}",
                      f"{100 * (params / r['published_params_m'] - 1):+.1f}%", f"{gmacs:.2f}",
                      "-" if published is None else f"{published:g}",
                      "-" if published is None else f"{100 * (gmacs / published - 1):+.1f}%")
    sink.table(table)
