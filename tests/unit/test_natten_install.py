"""How natten-lib's package is installed: never NATTEN's CUDA source build unless asked."""

import sys

from natbench.natten_install import WHEELS, pip_command, wheel_requirement


def test_the_wheel_tag_names_torch_and_cuda_as_natten_publishes_them():
    assert wheel_requirement("0.21.7", "2.13.0+cu130", "13.0") == "natten==0.21.7+torch2130cu130"
    assert wheel_requirement("0.21.6", "2.11.0", "12.6") == "natten==0.21.6+torch2110cu126"


def test_with_cuda_only_a_published_wheel_is_asked_for():
    command = pip_command("0.21.7", "2.13.0+cu130", "13.0", source_build=False)
    assert command[0] == sys.executable and "--only-binary=:all:" in command
    assert command[command.index("-f") + 1] == WHEELS and command[-1] == "natten==0.21.7+torch2130cu130"


def test_the_source_build_only_when_opted_into_and_pypi_on_a_cpu_only_torch():
    for command in (pip_command("0.21.7", "2.13.0+cu130", "13.0", source_build=True),
                    pip_command("0.21.7", "2.13.0+cpu", None, source_build=False)):
        assert "--only-binary=:all:" not in command and command[-1] == "natten==0.21.7"
