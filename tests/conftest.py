import os

import pytest

EXTENDED = os.environ.get("NATBENCH_EXTENDED_TESTS") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "extended: long sweeps, run with NATBENCH_EXTENDED_TESTS=1")


def pytest_collection_modifyitems(config, items):
    if EXTENDED:
        return
    skip = pytest.mark.skip(reason="long sweep; set NATBENCH_EXTENDED_TESTS=1 to run it")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fake_backends(monkeypatch):
    """Registers the test-only backends of tests/fakes.py for one test."""
    from natbench import backends
    from tests.fakes import REGISTRY

    monkeypatch.setattr(backends, "_REGISTRY", {**backends._REGISTRY, **REGISTRY})
    monkeypatch.setattr(backends, "_instances", {})
    return list(REGISTRY)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Runs `natbench ARGS` in-process; returns (exit code, stdout, stderr)."""
    import sys

    from natbench.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["natbench", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke
