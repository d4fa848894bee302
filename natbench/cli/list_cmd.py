"""natbench list: backends with their availability, and suites with their case counts."""

from __future__ import annotations

from natbench.cli import options


def list_(json_: options.Json = False) -> None:
    """Backends (available or why not) and suites (cases, description)."""
    from rich.table import Table

    from natbench import suite as suites
    from natbench.backends import backend_names, get_backend
    from natbench.console import Sink

    sink = Sink(json_)
    backends = []
    for name in backend_names():
        backend = get_backend(name)
        reason = backend.unavailable_reason()
        backends.append({"name": name, "op": backend.op, "available": reason is None,
                         "reason": reason, "description": backend.description(),
                         "layout": backend.layout})
    suite_rows = []
    for name in suites.suite_names():
        loaded = suites.load(name)
        suite_rows.append({"name": name, "cases": len(loaded.expand()),
                           "backends": loaded.backends, "description": loaded.description})
    if json_:
        sink.json({"backends": backends, "suites": suite_rows})
        return
    table = Table(title="backends", title_justify="left")
    for column in ("name", "computes", "available", "description / reason"):
        table.add_column(column)
    for row in backends:
        table.add_row(row["name"], row["op"], "[green]yes[/]" if row["available"] else "[red]no[/]",
                      row["description"] if row["available"] else row["reason"])
    sink.table(table)
    table = Table(title="suites", title_justify="left")
    for column in ("name", "cases", "backends", "description"):
        table.add_column(column)
    for row in suite_rows:
        table.add_row(row["name"], str(row["cases"]), ", ".join(row["backends"]), row["description"])
    sink.table(table)
