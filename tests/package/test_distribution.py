"""What a wheel and an sdist of natbench carry, and that an installed natbench runs from any folder."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _shipped(folder: str) -> set[str]:
    return {str(p.relative_to(ROOT / folder)) for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    for command in ([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                     "--disable-pip-version-check", "-q", "-w", str(out), str(ROOT)],
                    [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), str(ROOT)]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=out)
        assert done.returncode == 0, done.stderr[-2000:]
    [wheel], [sdist] = out.glob("*.whl"), out.glob("*.tar.gz")
    return wheel, sdist


def test_the_wheel_carries_the_package_the_suites_and_the_sources(dist):
    wheel, _ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {f"natbench/{p}" for p in _shipped("natbench") if p.endswith(".py")}
    suites = {f"natbench/suites/{p}" for p in _shipped("suites")}
    sources = {f"natbench/csrc/{p}" for p in _shipped("csrc")}
    assert suites and sources and "natbench/suites/smoke.toml" in suites
    assert package - names == set() and suites - names == set() and sources - names == set()


def test_the_sdist_carries_the_suites_and_the_sources_at_its_top(dist):
    _, sdist = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {f"suites/{p}" for p in _shipped("suites")} | {f"csrc/{p}" for p in _shipped("csrc")}
    assert expected - names == set() and "pyproject.toml" in names


def test_an_installed_natbench_finds_its_suites_and_sources_from_any_folder(dist, tmp_path):
    wheel, _ = dist
    site, elsewhere, extensions = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "ext"
    for folder in (elsewhere, extensions):
        folder.mkdir()
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "TORCH_EXTENSIONS_DIR": str(extensions)}
    probe = ("import json, natbench; from natbench import paths, suite; from natbench.env import git_commit; "
             "print(json.dumps([natbench.__file__, str(paths.SUITES), str(paths.CSRC), suite.suite_names(), "
             "git_commit()]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    module, suites, csrc, names, commit = json.loads(done.stdout)
    assert module.startswith(str(site)) and suites == str(site / "natbench" / "suites")
    assert csrc == str(site / "natbench" / "csrc") and (Path(csrc) / "bindings.cpp").is_file()
    assert set(names) == {Path(p).stem for p in _shipped("suites")} and commit is None
    # the command itself, light: it lists every suite and says the extension is not built yet
    done = subprocess.run([sys.executable, "-m", "natbench", "list", "--json"], capture_output=True,
                          text=True, cwd=elsewhere, env=env)
    listing = json.loads(done.stdout)
    assert done.returncode == 0 and {s["name"] for s in listing["suites"]} == set(names)
    assert {b["name"]: b["state"] for b in listing["backends"]}["natten"] == "not built"
