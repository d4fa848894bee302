"""natbench compare, plot and report through the real entry point."""

import json
import shutil
import subprocess

import pytest

from tests import synthetic


@pytest.fixture
def sweep(tmp_path):
    return synthetic.sweep(tmp_path / "a.jsonl")


def test_compare_two_files_finds_the_slowdown(cli, tmp_path, sweep):
    slower = synthetic.sweep(tmp_path / "b.jsonl", slowdown=1.3)
    code, stdout, stderr = cli("compare", sweep, slower, "--json")
    assert code == 0, stderr
    comparisons = {c["baseline"]: c for c in json.loads(stdout)["comparisons"]}
    natten = comparisons["natten @ a.jsonl"]
    assert natten["summary"]["losses"] == 4 and natten["summary"]["geomean_ratio"] == pytest.approx(1.3, rel=0.02)
    assert comparisons["swin @ a.jsonl"]["summary"]["ties"] == 4
    wrong = comparisons["test-wrong @ a.jsonl"]
    assert wrong["summary"]["unknown"] == 4 and "wrong answer" in wrong["cases"][0]["reason"]
    # two backends only: each is held to the calibration, not to the other (whose change would
    # show as the opposite change of the one)
    assert {c["drift"]["source"] for c in comparisons.values() if c["drift"]} == {"calibration"}
    # the slowed natten is called in all four cases: far more than chance alone
    calls = json.loads(stdout)["chance_calls"]
    assert (calls["judged"], calls["called"], calls["too_many"]) == (8, 4, True)
    code, stdout, _ = cli("compare", sweep, slower)
    assert code == 0 and "verdicts: 4 of 8 rows called faster or slower; 0.4 expected" in stdout


def test_compare_refuses_files_from_different_setups_unless_forced(cli, tmp_path, sweep):
    other = synthetic.sweep(tmp_path / "b.jsonl", env={"cpu_model": "Other CPU"})
    code, _, stderr = cli("compare", sweep, other)
    assert code == 2 and "cpu_model" in stderr and "--force" in stderr and "a.jsonl" in stderr
    code, stdout, stderr = cli("compare", sweep, other, "--force", "--markdown")
    assert code == 0 and "| B/A [95% CI] |" in stdout and "cpu_model" in stderr


@pytest.mark.parametrize("args, words", [
    (["natten"], "at least two backends"),
    (["natten", "nosuch"], "nosuch"),
    (["A.jsonl"], "two results files"),
])
def test_compare_bad_arguments_exit_2(cli, tmp_path, sweep, args, words):
    args = [str(sweep) if a == "A.jsonl" else a for a in args]
    code, _, stderr = cli("compare", *args)
    assert code == 2 and words in stderr


def test_compare_backends_runs_them_interleaved_and_prints_the_summary(cli, tmp_path, fake_clock):
    out = tmp_path / "c.jsonl"
    code, stdout, stderr = cli("compare", "torch", "swin", "--suite", "smoke", "--device", "cpu",
                               "--set", "resolution=14", "--set", "kernel_size=7", "--pass", "fwd",
                               "--max-time", "0.1", "--out", out)
    assert code == 0, stderr
    assert "swin against torch" in stdout and "geometric mean" in stdout
    rounds = [json.loads(line) for line in out.read_text().splitlines() if '"record":"round"' in line]
    order = [(r["round"], r["backend"]) for r in rounds]
    assert order == [(0, "torch"), (0, "swin"), (1, "torch"), (1, "swin"), (2, "torch"), (2, "swin")]


def test_plot_writes_png_and_svg_with_a_line_per_backend(cli, tmp_path, sweep):
    from matplotlib.image import imread

    out = tmp_path / "plots"
    code, stdout, stderr = cli("plot", sweep, "--out", out)
    assert code == 0, stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a-latency-vs-kernel_size.png", "a-latency-vs-kernel_size.svg",
                     "a-ratio-vs-kernel_size.png", "a-ratio-vs-kernel_size.svg",
                     "a-roofline-cpu-float32.png", "a-roofline-cpu-float32.svg"]
    svg = (out / "a-latency-vs-kernel_size.svg").read_text()
    assert "natten" in svg and "swin" in svg and "4 rows left out" in svg and "test-wrong" not in svg
    pixels = imread(out / "a-latency-vs-kernel_size.png")
    assert pixels.shape[0] > 200 and pixels.std() > 0.05


@pytest.mark.parametrize("y", ["memory", "tflops", "pct_of_peak"])
def test_plot_other_metrics(cli, tmp_path, sweep, y):
    code, stdout, _ = cli("plot", sweep, "--y", y, "--no-roofline", "--out", tmp_path)
    assert code == 0 and (tmp_path / f"a-{y}-vs-kernel_size.png").stat().st_size > 10_000


def test_plot_bad_metric_exits_2(cli, tmp_path, sweep):
    code, _, stderr = cli("plot", sweep, "--y", "speed", "--out", tmp_path)
    assert code == 2 and "speed" in stderr and "latency" in stderr


def test_report_is_self_contained_html(cli, tmp_path, sweep):
    out = tmp_path / "report.html"
    code, _, stderr = cli("report", sweep, "--out", out)
    assert code == 0, stderr
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") >= 4
    assert "Test CPU" in text and "Baseline <b>swin</b>" in text and "geometric mean" in text
    for external in ('src="http', "src='http", "<link", "<script"):
        assert external not in text


def test_report_of_two_runs_compares_them_with_their_verdicts_against_chance(cli, tmp_path, sweep):
    slower = synthetic.sweep(tmp_path / "b.jsonl", slowdown=1.3)
    out = tmp_path / "report.html"
    code, _, stderr = cli("report", sweep, slower, "--out", out)
    assert code == 0, stderr
    text = out.read_text()
    assert "b.jsonl against a.jsonl" in text and "verdicts: 4 of 8 rows called faster or slower" in text


def test_report_of_two_runs_leads_with_what_changed_then_the_summary_then_the_figures(cli, tmp_path, sweep):
    slower = synthetic.sweep(tmp_path / "b.jsonl", slowdown=1.3)
    out = tmp_path / "report.html"
    assert cli("report", sweep, slower, "--out", out)[0] == 0
    text = out.read_text()
    order = [text.index(marker) for marker in ("id=changes", "id=summary", "id=figures", "class=results",
                                               "<details><summary>Environment")]
    assert order == sorted(order)
    changes = text[text.index("id=changes"):text.index("id=summary")]
    assert "1.30x" in changes and "b.jsonl / a.jsonl" in changes


def test_a_declared_baseline_is_the_reports_and_asking_for_another_is_honoured(cli, tmp_path):
    from tests import synthetic

    rows = [synthetic.row(name, k, 1e-3 * k * f, seed=i) for i, (name, f) in
            enumerate([("natten-lib", 9), ("natten", 1), ("swin", 2)]) for k in (3, 7)]
    path = synthetic.write(tmp_path / "r.jsonl", rows)
    out = tmp_path / "report.html"
    assert cli("report", path, "--out", out)[0] == 0
    assert "Baseline <b>swin</b> (the first of swin" in out.read_text()  # not natten-lib, the file's first
    assert cli("report", path, "--out", out, "--baseline", "natten")[0] == 0
    assert "Baseline <b>natten</b> (--baseline)" in out.read_text()
    code, _, stderr = cli("report", path, "--out", out, "--baseline", "flex")
    assert code == 2 and "--baseline flex" in stderr


def test_report_renders_in_headless_chromium_with_the_summary_in_its_first_screen(cli, tmp_path, sweep):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package)")
    from matplotlib.image import imread

    out, shot = tmp_path / "report.html", tmp_path / "shot.png"
    assert cli("report", sweep, "--out", out)[0] == 0
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,1000", out.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = imread(shot)[..., :3]
    not_white = (pixels.min(axis=-1) < 0.9).mean()
    assert 0.02 < not_white < 0.9, f"{not_white:.1%} of the screenshot is not white"
    # the laid-out page, measured by a probe added to a copy: the summary starts in the first
    # screen, above the first results table
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", (
        "<script>const top_ = e => e.getBoundingClientRect().top; document.title = [top_("
        "document.getElementById('summary')), top_(document.querySelector('table.results')), "
        "innerHeight].join(' ');</script></body>")))
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                          "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    summary, table, screen = map(float, dom[dom.index("<title>") + 7:dom.index("</title>")].split())
    assert summary < screen and summary < table
