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
