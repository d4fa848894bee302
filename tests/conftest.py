import os

import pytest

EXTENDED = os.environ.get("NATBENCH_EXTENDED_TESTS") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "extended: long sweeps, run with NATBENCH_EXTENDED_TESTS=1")
    config.addinivalue_line("markers", "worker: measures in worker processes, as natbench does by default")


def pytest_collection_modifyitems(config, items):
    if EXTENDED:
        return
    skip = pytest.mark.skip(reason="long sweep; set NATBENCH_EXTENDED_TESTS=1 to run it")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def in_process(request, monkeypatch):
    """Measurements run in the test's own process (NATBENCH_ISOLATION=none), where fake backends,
    a fake clock and stubs are in place; tests marked `worker` measure in worker processes."""
    if "worker" not in request.keywords:
        from natbench import env

        monkeypatch.setattr(env, "ISOLATION", "none")


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    """Each test starts with no plugins loaded and loads its own: a crashing plugin of one test
    must not stay registered for the next."""
    from natbench import backends

    plugins = {}
    monkeypatch.setattr(backends, "_plugins", plugins)
    monkeypatch.setattr(backends, "_problems", [])
    monkeypatch.setattr(backends, "_loaded", {backends.ENTRY_POINT_GROUP})
    yield
    for name in plugins:
        backends._instances.pop(name, None)


@pytest.fixture
def stub_calibration(monkeypatch):
    """The run's calibration and probes as fixed records, at once (tests.fakes.calibration)."""
    from natbench import calibrate
    from tests import fakes

    monkeypatch.setattr(calibrate, "calibrate", fakes.calibration)
    monkeypatch.setattr(calibrate, "probe", fakes.probe)


@pytest.fixture
def fake_clock(monkeypatch, stub_calibration):
    """natbench times on simulated time (tests.fakes.FakeClock) for one test; the calibration,
    which would run thousands of real matmuls in simulated seconds, is stubbed."""
    from natbench import timing
    from tests.fakes import FakeClock

    clock = FakeClock()
    monkeypatch.setattr(timing, "CLOCK", clock)
    return clock


@pytest.fixture
def fake_backends(monkeypatch, fake_clock):
    """Registers the test-only backends of tests/fakes.py for one test, on simulated time."""
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
