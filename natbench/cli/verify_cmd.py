"""natbench verify: the correctness of every available backend over a suite; exit 1 on failure."""

from __future__ import annotations

import typer

from natbench.cli import options


def verify(suite: options.Suite = "smoke", backend: options.Backends = None,
           device: options.Device = "auto", dtype: options.Dtype = None,
           pass_: options.Pass = None, set_: options.Sets = None,
           backend_module: options.BackendModules = None,
           json_: options.Json = False, quiet: options.Quiet = False) -> None:
    """Check each backend's output against the reference (float64) on every case of a suite."""
    from rich.table import Table

    from natbench.backends import backend_names, get_backend
    from natbench.console import Sink
    from natbench.errors import CheckFailedError
    from natbench.runner import row_base
    from natbench.worker import executor, measure, measuring_setup

    sink = Sink(json_, quiet)
    suite_obj, points, names, device_name = options.plan(suite, backend, device, dtype, pass_, set_,
                                                         backend_module, sink.warn)
    if backend is None:
        names = [n for n in backend_names() if n != "reference" and get_backend(n).unavailable_reason() is None]
    policy = suite_obj.policy(device_name)
    rows = []
    # in a worker process, as a run measures: a backend that crashes it is a `crashed` row
    with executor(measuring_setup(device_name, policy)) as worker, \
            sink.progress(len(points) * len(names)) as advance:
        for point in points:
            for name in names:
                rows.append(measure(worker, "check", point, name, row=row_base(point, name),
                                    timeout=policy.call_timeout_s))
                advance(f"{name} {point.case.key}")
    table = Table(title=f"verify {suite_obj.name}", title_justify="left")
    for column in ("backend", "case", "status", "max abs error", "tolerance", "check"):
        table.add_column(column)
    failures = [r for r in rows if r["status"] in ("error", "oom", "crashed", "timeout")
                or r.get("check") == "fail"]
    for row in rows:
        error = row.get("max_abs_error")
        table.add_row(row["backend"], row["case_key"], row["status"],
                      "-" if error is None else f"{error:.2e}",
                      "-" if row.get("tolerance") is None else f"{row['tolerance']:.1e}",
                      {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]"}.get(row.get("check"),
                                                                              row.get("reason") or "-"))
    if json_:
        sink.json(rows)
    sink.table(table)
    if failures:
        raise CheckFailedError(f"{len(failures)} of {len(rows)} checks failed: "
                               + "; ".join(f"{r['backend']} {r['case_key']}" for r in failures[:5]))
    sink.info(f"all {sum(r.get('check') == 'pass' for r in rows)} checks passed "
              f"({sum(r['status'] == 'skipped' for r in rows)} skipped)")
    raise typer.Exit(0)
