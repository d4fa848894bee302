"""Every error natbench raises on purpose, each with the exit code the CLI uses for it.

Core code raises these; only `natbench.cli` prints them and exits.
"""


class NatbenchError(Exception):
    """Base class: a failure natbench understands and can explain."""

    exit_code = 2


class InvalidProblemError(NatbenchError, ValueError):
    """An impossible operator problem: kernel larger than the axis, RPB with an even kernel, ..."""


class UnsupportedError(NatbenchError, ValueError):
    """A backend cannot run this problem; the message says why."""


class UnknownBackendError(NatbenchError, KeyError):
    """A backend name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SuiteError(NatbenchError):
    """A malformed suite file or option; the message names file, line and key."""


class ResultsError(NatbenchError):
    """An unreadable or incompatible results file."""


class CheckFailedError(NatbenchError):
    """A verification or gate check failed (exit code 1)."""

    exit_code = 1
