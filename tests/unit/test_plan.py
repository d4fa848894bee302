"""The plan of a run: skip reasons, expected costs and the split into shards."""

import pytest

from natbench import store
from natbench import suite as suites
from natbench.errors import SuiteError
from natbench.plan import Costs, Shard, make_plan, pair_seconds, parse_shard
from natbench.timing import TimingPolicy

POLICY = TimingPolicy(rounds=4, max_time_s=1.0)


def _points(**sweep):
    suite = suites.load("kernel-sizes").with_overrides({"device": ["cpu"], **sweep})
    return suite.expand()


@pytest.mark.parametrize("text,shard", [("1/1", Shard(0, 1)), ("3/4", Shard(2, 4)), (" 2 / 2 ", Shard(1, 2))])
def test_shards_parse_one_based(text, shard):
    assert parse_shard(text) == shard and str(shard) == f"{shard.index + 1}/{shard.count}"


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "-1/2", ""])
def test_a_bad_shard_names_the_value_and_the_form(text):
    with pytest.raises(SuiteError, match="use I/N"):
        parse_shard(text)


def test_a_pair_costs_its_rounds_budget_and_overheads_and_more_when_calls_are_slower():
    fast, slow = pair_seconds(1e-3, POLICY, 0.25), pair_seconds(0.5, POLICY, 0.25)
    # 4 rounds of warm-up, probe call and a quarter of the 1 s budget, after the set-up
    assert fast == pytest.approx(0.25 + 4 * (0.025 + 1e-3 + 0.25))
    assert slow > fast
    # a 3 s call gets one round (the budget holds none), of its probe and one sampled call
    assert pair_seconds(3.0, POLICY, 0.0) == pytest.approx(6.0)


def test_shards_hold_whole_cases_once_each_balanced_and_the_same_every_time():
    plan = make_plan(_points(), ["torch", "swin"], "cpu", POLICY, Costs())
    for count in (1, 2, 3, 7):
        split = plan.shards(count)
        assert split == plan.shards(count)  # deterministic
        keys = [k for part in split for k in part]
        assert sorted(keys) == sorted(plan.cases()) and len(keys) == len(set(keys))
        costs = plan.case_costs()
        loads = [sum(costs[k] for k in part) for part in split]
        # longest-first onto the least loaded: no shard exceeds another by more than one case
        assert max(loads) - min(loads) <= max(costs.values()) + 1e-9
    # a shard's cases keep the suite's order
    order = plan.cases()
    for part in plan.shards(3):
        assert part == sorted(part, key=order.index)


def test_impossible_and_unsupported_pairs_are_planned_as_skips_with_their_reasons():
    points = _points(resolution=[8], kernel_size=[3, 9], **{"pass": ["fwdbwd"]})
    plan = make_plan(points, ["torch", "flex"], "cpu", POLICY, Costs())
    reasons = {(p.point.case.kernel_size[0], p.backend): p.skip for p in plan.pairs}
    assert reasons[(3, "torch")] is None
    assert "no backward pass on cpu" in reasons[(3, "flex")]
    assert "kernel" in reasons[(9, "torch")].lower()  # K 9 does not fit a map of 8
    assert all(p.cost_s < 0.01 for p in plan.pairs if p.skip)


def test_costs_come_from_a_results_file_measured_pairs_first_then_the_backends_rate(tmp_path):
    points = _points(kernel_size=[3, 5])
    measured = points[0]
    flops = measured.case.flops("na")
    path = tmp_path / "r.jsonl"
    writer = store.ResultsWriter(path, {"suite": "kernel-sizes", "env": {}})
    row = {"record": "row", "case_key": measured.case.key, "backend": "torch", "status": "ok",
           "latency_ms_median": 20.0, "tflops": flops / 20e-3 / 1e12}
    writer.write(row)
    for round_, seconds in enumerate((0.9, 0.3, 0.3)):
        writer.write({"record": "round", "case_key": measured.case.key, "backend": "torch",
                      "round": round_, "round_s": seconds})
    writer.close()
    costs = Costs(store.load(path))
    plan = make_plan(points, ["torch", "swin"], "cpu", POLICY, costs)
    by = {(p.point.case.key, p.backend): p for p in plan.pairs}
    first = by[(measured.case.key, "torch")]
    assert first.source == "measured" and first.call_s == pytest.approx(0.02)
    other = by[(points[1].case.key, "torch")]  # K 5: the rate torch reached at K 3
    assert other.source == "rate"
    assert other.call_s == pytest.approx(points[1].case.flops("na") / (flops / 0.02))
    assert by[(measured.case.key, "swin")].source == "stated"
    # the first round's extra time in that file (0.6 s) is torch's set-up
    assert first.cost_s == pytest.approx(pair_seconds(0.02, POLICY, 0.6))
    assert plan.costs_from == str(path)
