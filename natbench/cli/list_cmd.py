"""natbench list: backends with their availability, and suites with their case counts."""

from __future__ import annotations

from natbench.cli import options


def _availability(backend, extension_status) -> tuple[str, str | None]:
    """("yes", None), ("no", why) or ("not built", how to build it), compiling nothing: a backend
    of the compiled extension is answered from the extension's build stamp (`extension_status`,
    read once for them all)."""
    if backend.needs_extension:
        from natbench.extension import NOT_BUILT

        built = extension_status()
        if built is None:
            return "not built", NOT_BUILT
        reason = built.reason
    else:
        reason = backend.unavailable_reason()
    return ("yes", None) if reason is None else ("no", reason)


def list_(backend_module: options.BackendModules = None, json_: options.Json = False) -> None:
    """Backends (available, not built yet, or why not; built-in or from which plugin), suites
    (cases, description), and plugins that did not load. Compiles nothing."""
    from rich.table import Table

    from natbench import suite as suites
    from natbench.backends import backend_names, get_backend, origin, plugin_problems
    from natbench.console import Sink

    sink = Sink(json_)
    options.load_plugins(backend_module)
    backends = []
    from functools import cache

    from natbench.extension import status

    extension_status = cache(status)
    for name in backend_names():
        backend = get_backend(name)
        state, reason = _availability(backend, extension_status)
        backends.append({"name": name, "op": backend.op, "available": state == "yes", "state": state,
                         "reason": reason, "description": backend.description(),
                         "layout": backend.layout, "origin": origin(name)})
    broken = [{"plugin": where, "reason": why} for where, why in plugin_problems()]
    suite_rows = []
    for name in suites.suite_names():
        loaded = suites.load(name)
        suite_rows.append({"name": name, "cases": len(loaded.expand()),
                           "backends": loaded.backends, "description": loaded.description})
    if json_:
        sink.json({"backends": backends, "suites": suite_rows, "plugin_problems": broken})
        return
    table = Table(title="backends", title_justify="left")
    plugins = any(row["origin"] != "built-in" for row in backends)
    for column in ("name", "computes", "available", "description / reason", *(["from"] if plugins else [])):
        table.add_column(column)
    for row in backends:
        colour = {"yes": "green", "no": "red"}.get(row["state"], "yellow")
        table.add_row(row["name"], row["op"], f"[{colour}]{row['state']}[/]",
                      row["description"] if row["available"] else row["reason"],
                      *([row["origin"]] if plugins else []))
    sink.table(table)
    if broken:
        table = Table(title="plugins that did not load (the other backends run)", title_justify="left")
        for column in ("plugin", "why"):
            table.add_column(column)
        for row in broken:
            table.add_row(row["plugin"], f"[red]{row['reason']}[/]")
        sink.table(table)
    table = Table(title="suites", title_justify="left")
    for column in ("name", "cases", "backends", "description"):
        table.add_column(column)
    for row in suite_rows:
        table.add_row(row["name"], str(row["cases"]), ", ".join(row["backends"]), row["description"])
    sink.table(table)
