"""Figures a person reads at a glance: fixed colours, runs apart, at most MAX_LINES lines an axes."""

import re

from natbench import store
from natbench.plot import COLOURS, EXTRA_COLOURS, MAX_LINES, colours, metric_figures, ratio_figures, tagged_rows
from tests import synthetic

SUITE = ("natten", "natten-unfused", "torch", "flex", "natten-lib", "swin", "sdpa")


def test_each_shipped_backend_has_its_own_colour_and_plugins_never_share_one():
    assert len(set(COLOURS.values())) == len(COLOURS)
    chosen = colours(["natten", "my-kernel", "other-kernel", *[f"plugin-{i}" for i in range(6)]])
    assert chosen["natten"] == COLOURS["natten"]
    assert len(set(chosen.values())) == len(chosen)
    assert all(chosen[name] in EXTRA_COLOURS for name in chosen if name not in COLOURS)
    assert colours(["my-kernel"])["my-kernel"] == colours(["my-kernel", "natten"])["my-kernel"]


def _run(path, slowdown):
    rows = [synthetic.row(name, k, 1e-4 * k * (j + 1) * slowdown, seed=7 * k + j)
            for j, name in enumerate(SUITE) for k in (3, 7, 15)]
    return store.load(synthetic.write(path, rows))


def test_two_runs_of_seven_backends_draw_a_panel_each_in_the_same_colours(tmp_path):
    rows, _ = tagged_rows([_run(tmp_path / "a.jsonl", 1.0), _run(tmp_path / "b.jsonl", 1.2)])
    [svg, *_] = [p for p in metric_figures(rows, "kernel_size", "latency", tmp_path, "t", ("svg",))]
    text = svg.read_text()
    assert 'id="axes_1"' in text and 'id="axes_2"' in text and 'id="axes_3"' not in text
    assert 2 * len(SUITE) > MAX_LINES
    used = set(re.findall(r"stroke: (#[0-9a-f]{6})", text))
    assert {COLOURS[name] for name in SUITE} <= used
    assert "run a" in text and "run b" in text  # the legend tells the runs apart by line style


def test_the_ratio_figure_draws_each_backend_against_its_runs_baseline_with_the_line_at_one(tmp_path):
    rows, _ = tagged_rows([_run(tmp_path / "a.jsonl", 1.0)])
    [svg] = ratio_figures(rows, {"a": "swin"}, "kernel_size", tmp_path, "t", ("svg",))
    text = svg.read_text()
    assert "time / swin" in text and "swin (= 1)" in text
    assert COLOURS["swin"] not in set(re.findall(r"stroke: (#[0-9a-f]{6})", text))


def test_networks_get_the_throughput_figure_images_per_second_against_gmacs(tmp_path):
    from natbench.paths import PACKAGE_ROOT
    from natbench.plot import throughput_figures

    results = store.load(PACKAGE_ROOT.parent / "results" / "cpu-amd-epyc" / "models.jsonl")
    rows, _ = tagged_rows([results])
    paths = throughput_figures(rows, tmp_path, "m", ("svg",))
    assert len(paths) == 4  # batch 1 and 8, fwd and fwdbwd
    text = paths[0].read_text()
    assert "GMACs per image" in text and "nat_tiny" in text and "swin_tiny" in text
    assert {COLOURS["natten"], COLOURS["swin"]} <= set(re.findall(r"(?:fill|stroke): (#[0-9a-f]{6})", text))


def test_a_model_on_a_backend_takes_the_backends_colour_unless_another_line_has_it():
    chosen = colours(["nat_pair natten", "swin_pair swin", "nat_tiny natten", "dinat_tiny natten"])
    assert chosen["swin_pair swin"] == COLOURS["swin"]
    assert len(set(chosen.values())) == len(chosen)
    assert sum(c == COLOURS["natten"] for c in chosen.values()) == 1


def test_networks_of_several_sizes_plot_against_their_size_small_to_large(tmp_path):
    from natbench.plot import _line_groups, default_x

    rows = [{"op": "model", "model": m, "backend": "natten", "image_size": 224, "batch": 8, "dtype": "float32",
             "device": "cpu", "pass": "fwd", "_source": "run", "label": label, "case_key": m}
            for m, label in (("nat_base", "4: base"), ("nat_mini", "1: mini"), ("nat_tiny", "2: tiny"))]
    assert default_x([{k: v for k, v in r.items() if k != "label"} for r in rows]) == "model"
    view = [{**r, "model": None} for r in rows]  # as console.network_view has them: size in the label
    (_, lines, _, numeric, order), = _line_groups(view, "label", lambda row: (1.0, None, None))
    assert not numeric and order == ["1: mini", "2: tiny", "4: base"]
