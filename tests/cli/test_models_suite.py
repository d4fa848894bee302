"""natbench run --suite models: whole networks, each on the backends its attention runs on."""

import pytest

from natbench import store
from natbench.suite import load


def test_the_models_suite_sweeps_three_networks_two_batches_and_both_passes():
    points = load("models").expand()
    assert len(points) == 12
    assert {p.case.model for p in points} == {"nat_tiny", "dinat_tiny", "swin_tiny"}
    assert {(p.case.batch, p.case.pass_) for p in points} == {(1, "fwd"), (1, "fwdbwd"), (8, "fwd"), (8, "fwdbwd")}


def test_an_unknown_model_is_refused_before_anything_runs(cli):
    code, _, stderr = cli("run", "--suite", "models", "--set", "model=nat_huge")
    assert code == 2 and "unknown model 'nat_huge'" in stderr and "nat_tiny" in stderr


def test_networks_are_measured_checked_and_compared_across_families(cli, tmp_path):
    out = tmp_path / "m.jsonl"
    code, stdout, stderr = cli("run", "--suite", "models", "--set", "model=nat_tiny,swin_tiny",
                               "--set", "image_size=64", "--set", "batch=2", "--pass", "fwd,fwdbwd",
                               "--backend", "natten,torch,swin", "--rounds", "1", "--max-time", "2",
                               "--threads", "1", "--out", out)
    assert code == 0, stderr
    rows = store.load(out).rows
    ran = [r for r in rows if r["status"] == "ok"]
    assert {(r["model"], r["backend"], r["pass"]) for r in ran} == {
        (m, b, p) for m, b in (("nat_tiny", "natten"), ("nat_tiny", "torch"), ("swin_tiny", "swin"))
        for p in ("fwd", "fwdbwd")}
    for row in ran:
        assert row["op"] == "model" and row["check"] == "pass" and row["layout_in_timing"]
        assert row["params"] > 1e7 and row["macs"] > 0
        assert row["images_per_s"] == pytest.approx(2 / (row["latency_ms_median"] * 1e-3))
        assert row["flops"] == 2 * row["macs"] * (3 if row["pass"] == "fwdbwd" else 1)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and all("runs its attention on" in r["reason"] for r in skipped)
    # NAT-T against Swin-T: one column per family and backend, a row per size
    assert "nat natten" in stdout and "against swin swin" in stdout and "tiny" in stdout
    assert "runs its attention on" not in stderr  # a family's impossible pairs are no news
