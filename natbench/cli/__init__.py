"""The natbench command line. The only place that prints errors and exits.

Command modules import torch, pandas and the backends inside their functions, so that
`natbench --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from natbench.cli import (build_cmd, compare_cmd, env_cmd, export_cmd, gate_cmd, gpu_check_cmd, launch_cmd,
                          list_cmd, merge_cmd, models_cmd, plot_cmd, profile_cmd, report_cmd, run_cmd, verify_cmd)

app = typer.Typer(name="natbench", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Benchmark and profile neighborhood attention against window and full attention.")
app.command("run")(run_cmd.run)
app.command("verify")(verify_cmd.verify)
app.command("compare")(compare_cmd.compare)
app.command("plot")(plot_cmd.plot)
app.command("report")(report_cmd.report)
app.command("profile")(profile_cmd.profile)
app.command("gate")(gate_cmd.gate)
app.add_typer(gate_cmd.baseline_app, name="baseline")
app.command("list")(list_cmd.list_)
app.command("env")(env_cmd.env)
app.command("build")(build_cmd.build)
app.command("export")(export_cmd.export)
app.command("merge")(merge_cmd.merge)
app.command("launch")(launch_cmd.launch)
app.command("gpu-check")(gpu_check_cmd.gpu_check)
app.command("models")(models_cmd.models)


def main() -> None:
    from natbench.env import DEBUG
    from natbench.errors import NatbenchError

    try:
        # Outside standalone mode typer returns the exit code (130 after Ctrl-C) and raises
        # usage errors, which carry their own code and know how to show themselves.
        code = app(standalone_mode=False)
    except NatbenchError as error:
        if DEBUG:
            raise
        from natbench.console import error as print_error

        print_error(str(error))
        sys.exit(error.exit_code)
    except Exception as error:
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            error.show()
            sys.exit(error.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
