"""Backend plugins: from a file, a module or an entry point, in every command; broken ones are
reported and the other backends still run."""

import json
import sys
from types import SimpleNamespace

import pytest

from natbench import backends, store

GOOD = '''
import torch
from natbench.plugin import Backend, Capabilities


class TorchAgain(Backend):
    """A plugin that calls natbench's own torch backend: correct, so it passes the check."""

    name = "plugin-torch"
    summary = "torch NA, through a plugin"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        from natbench.backends import get_backend

        return get_backend("torch").forward(q, k, v, case, rpb, scale)


class Wrong(Backend):
    name = "plugin-wrong"
    summary = "returns v: a plugin is checked like every backend"
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        return v * 1
'''

BROKEN = {
    "raises.py": "raise ImportError('a dependency of the plugin is missing')\n",
    "nothing.py": "x = 1\n",
    "lacks.py": "from natbench.plugin import Backend\nclass Lacks(Backend):\n    name = 'lacks'\n    summary = 's'\n",
    "clash.py": ("from natbench.plugin import Backend\nclass Clash(Backend):\n    name = 'torch'\n"
                 "    summary = 's'\n    def forward(self, q, k, v, case, rpb=None, scale=None):\n        return v\n"),
    "future.py": ("from natbench.plugin import Backend\nclass Future(Backend):\n    name = 'future'\n"
                  "    summary = 's'\n    interface = 99\n    def forward(self, q, k, v, case, rpb=None, scale=None):\n"
                  "        return v\n"),
}
CASE = ["--suite", "smoke", "--device", "cpu", "--set", "resolution=8", "--set", "kernel_size=3", "--pass", "fwd"]


@pytest.fixture
def plugin_files(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_file_plugin_is_listed_with_its_origin_and_runs_checked_against_the_reference(
        cli, plugin_files, tmp_path, fake_clock):
    good = str(plugin_files / "good.py")
    code, stdout, _ = cli("list", "--json", "--backend-module", good)
    listing = {b["name"]: b for b in json.loads(stdout)["backends"]}
    assert code == 0 and listing["plugin-torch"]["origin"] == good and listing["torch"]["origin"] == "built-in"
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli("run", *CASE, "--backend", "plugin-torch,plugin-wrong,swin", "--backend-module",
                          good, "--out", out)
    assert code == 0, stderr
    rows = {r["backend"]: r for r in store.load(out).rows}
    assert rows["plugin-torch"]["status"] == "ok" and rows["plugin-torch"]["check"] == "pass"
    assert rows["plugin-wrong"]["check"] == "fail" and rows["swin"]["check"] == "pass"
    assert store.load(out).header["plan"]["backend_module"] == [good]


def test_a_module_class_plugin_runs_in_verify(cli, plugin_files, monkeypatch, fake_clock):
    monkeypatch.syspath_prepend(str(plugin_files))
    code, _, stderr = cli("verify", *CASE, "--backend", "plugin-torch", "--backend-module", "good:TorchAgain")
    assert code == 0, stderr


def test_broken_plugins_are_reported_with_their_reasons_and_the_others_run(cli, plugin_files, tmp_path,
                                                                           fake_clock):
    modules = [arg for name in ("good.py", *BROKEN) for arg in ("--backend-module", str(plugin_files / name))]
    code, stdout, _ = cli("list", "--json", *modules)
    problems = {p["plugin"].rsplit("/", 1)[-1]: p["reason"] for p in json.loads(stdout)["plugin_problems"]}
    assert code == 0 and "plugin-torch" in {b["name"] for b in json.loads(stdout)["backends"]}
    assert "a dependency of the plugin is missing" in problems["raises.py"]
    assert "defines no backend class" in problems["nothing.py"]
    assert "implements neither forward nor bind" in problems["lacks.py"]
    assert "'torch' is a built-in backend's" in problems["clash.py"]
    assert "interface 99" in problems["future.py"]
    code, _, stderr = cli("run", *CASE, "--backend", "plugin-torch,torch", *modules, "--out", tmp_path / "r.jsonl")
    assert code == 0 and stderr.count("did not load") == len(BROKEN)
    assert {r["backend"] for r in store.load(tmp_path / "r.jsonl").rows} == {"plugin-torch", "torch"}
    # asking for a plugin that did not load says so
    code, _, stderr = cli("run", *CASE, "--backend", "future", *modules)
    assert code == 2 and "unknown backend 'future'" in stderr and "did not load" in stderr


def test_entry_points_of_installed_packages_are_found(cli, monkeypatch, plugin_files):
    from importlib import metadata

    monkeypatch.syspath_prepend(str(plugin_files))

    def entry_points(group):
        assert group == "natbench.backends"
        good = SimpleNamespace(name="plugin-torch", value="good:TorchAgain", dist=SimpleNamespace(name="good-dist"),
                               load=lambda: getattr(__import__("good"), "TorchAgain"))
        bad = SimpleNamespace(name="bad", value="bad:Nope", dist=None,
                              load=lambda: (_ for _ in ()).throw(ModuleNotFoundError("No module named 'bad'")))
        return [good, bad]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(backends, "_loaded", set())
    code, stdout, _ = cli("list", "--json")
    listing = json.loads(stdout)
    origins = {b["name"]: b["origin"] for b in listing["backends"]}
    assert origins["plugin-torch"] == "entry point plugin-torch = good:TorchAgain (good-dist)"
    assert listing["plugin_problems"] == [{"plugin": "entry point bad = bad:Nope",
                                           "reason": "ModuleNotFoundError: No module named 'bad'"}]
    sys.modules.pop("good", None)


@pytest.mark.parametrize("sets", [
    ["rank=1", "resolution=17", "kernel_size=4,5", "is_causal=true,false"],
    ["resolution=15x12", "kernel_size=5x3", "dilation=2x1", "stride=2x1"],
    ["rank=3", "resolution=6x5x7", "kernel_size=3", "is_causal=truexfalsextrue"],
])
def test_the_example_plugin_package_computes_neighborhood_attention(cli, sets, fake_clock):
    from pathlib import Path

    module = Path(__file__).resolve().parents[2] / "examples" / "natbench-example-plugin" / \
        "natbench_example_plugin" / "__init__.py"
    code, _, stderr = cli("verify", "--suite", "smoke", "--device", "cpu", "--backend", "example-masked-sdpa",
                          "--backend-module", str(module), "--pass", "fwd", *[a for s in sets for a in ("--set", s)])
    assert code == 0, stderr
