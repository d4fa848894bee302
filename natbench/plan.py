"""A run's plan before any measuring: its pairs, those it would skip and why, what each pair is
expected to cost, and how the pairs fall into shards (`natbench run --dry-run`, `--shard I/N`,
`natbench launch`).

Nothing here compiles or measures. Skip reasons come from the case's own validity and the
backends' declared capabilities (the extension's build stamp, not a build; no GPU needed, so a
cluster's login node can plan a GPU sweep). A pair's cost follows the run's timing policy
(rounds, budgets, warm-up) from its expected call time: the pair's own median in a results file
at hand, else the case's FLOPs at its backend's measured rate in that file, else at a stated
rate (`STATED_RATE`). A shard is a set of whole cases (a case's backends together, so that
they stay interleaved), chosen by longest-expected-first onto the least-loaded shard: the same
inputs give every job the same split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from natbench.case import ModelCase
from natbench.errors import InvalidProblemError, SuiteError
from natbench.schedule import rounds_for
from natbench.suite import Point
from natbench.timing import TimingPolicy

# FLOP/s a backend is assumed to reach where no results file says (order of magnitude: one CPU
# core of a server, one data-centre GPU); the dry run names the figure it used.
STATED_RATE = {"cpu": 1e10, "cuda": 1e13}
# A pair's first round: binding, the reference check and the memory pass, beyond its calls
# (kernel-sizes on a 2-vCPU EPYC: 0.1-0.25 s more than its later rounds).
STATED_SETUP_S = 0.25
# Per run: the measuring worker's start and the matmul calibration (two runs of at most 2.2 s)
# per dtype; each round's probe per dtype.
WORKER_START_S = 3.0
CALIBRATION_S = 4.5
PROBE_S = 0.1
# A torch.compile'd backend's first call of a case (FlexAttention), where no results file says.
STATED_COMPILE_S = 1.0
# The compiled extension's build where it is not built yet.
STATED_BUILD_S = 90.0
SKIPPED_S = 0.001


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`, as --shard I/N writes it (1-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise SuiteError(f"--shard {text!r}: use I/N with 1 <= I <= N, e.g. --shard 2/4 for the second "
                         f"of four shards.")
    return Shard(int(match[1]) - 1, int(match[2]))


@dataclass(frozen=True)
class PlannedPair:
    point: Point
    backend: str
    skip: str | None  # why the run would skip it; None when it would be measured
    call_s: float  # expected seconds of one call
    cost_s: float  # expected seconds of all its rounds
    source: str  # where call_s came from: "measured", "rate", "stated"


@dataclass
class Plan:
    pairs: list[PlannedPair]
    fixed_parts: dict[str, float]  # per run: worker, calibration, probes, compiling, building
    costs_from: str  # the results file the costs came from, or the stated rate

    def cases(self) -> list[str]:
        return list(dict.fromkeys(p.point.case.key for p in self.pairs))

    def case_costs(self) -> dict[str, float]:
        costs: dict[str, float] = {}
        for pair in self.pairs:
            costs[pair.point.case.key] = costs.get(pair.point.case.key, 0.0) + pair.cost_s
        return costs

    @property
    def fixed_s(self) -> float:
        return sum(self.fixed_parts.values())

    @property
    def total_s(self) -> float:
        return self.fixed_s + sum(p.cost_s for p in self.pairs)

    def shards(self, count: int) -> list[list[str]]:
        """The case keys of each of `count` shards, each in the suite's order: cases by expected
        cost, longest first (ties in suite order), each onto the shard with the least so far
        (ties to the lowest). Deterministic in the plan's costs."""
        costs = self.case_costs()
        order = {key: i for i, key in enumerate(costs)}
        loads, members = [0.0] * count, [[] for _ in range(count)]
        for key in sorted(costs, key=lambda k: (-costs[k], order[k])):
            target = min(range(count), key=lambda i: (loads[i], i))
            loads[target] += costs[key]
            members[target].append(key)
        return [sorted(m, key=order.__getitem__) for m in members]


class Costs:
    """Expected call times from a results file (or none): per (case key, backend) the row's
    median, per backend its median FLOP/s over its rows that ran, and the first round's extra
    time per backend."""

    def __init__(self, results=None):
        self.source = str(results.path) if results is not None else None
        self.calls: dict[tuple[str, str], float] = {}
        self.rates: dict[str, float] = {}
        self.setup: dict[str, float] = {}
        self.compile_s: float | None = None
        if results is None:
            return
        rates: dict[str, list[float]] = {}
        for row in results.rows:
            if row.get("status") != "ok" or not row.get("latency_ms_median"):
                continue
            call_s = row["latency_ms_median"] / 1e3
            self.calls[(row["case_key"], row["backend"])] = call_s
            if row.get("tflops"):
                rates.setdefault(row["backend"], []).append(row["tflops"] * 1e12)
        self.rates = {backend: median(values) for backend, values in rates.items()}
        extra: dict[str, list[float]] = {}
        by_pair: dict[tuple[str, str], list[dict]] = {}
        for record in results.rounds:
            by_pair.setdefault((record["case_key"], record["backend"]), []).append(record)
        for (_, backend), rounds in by_pair.items():
            timed = [r["round_s"] for r in rounds if "round_s" in r]
            if len(timed) >= 2:
                extra.setdefault(backend, []).append(max(0.0, timed[0] - median(timed[1:])))
        self.setup = {backend: median(values) for backend, values in extra.items()}
        prepare = results.header.get("prepare") or {}
        self.compile_s = prepare.get("wall_s")

    def call(self, point: Point, backend, device: str) -> tuple[float, str]:
        """(expected seconds of one call, where that came from)."""
        key = (point.case.key, backend.name)
        if key in self.calls:
            return self.calls[key], "measured"
        flops = point.case.flops(backend.op)  # a network's case counts its own, whatever the op
        if backend.name in self.rates:
            return flops / self.rates[backend.name], "rate"
        return flops / STATED_RATE[device], "stated"


def pair_seconds(call_s: float, policy: TimingPolicy, setup_s: float) -> float:
    """A pair's expected time under its backend's policy: its first round's set-up, then per
    round the warm-up (unless the probe call is as long), the probe call, and sampling until the
    round's budget or its sample cap is spent (at least one call). Unconverged rounds, the
    common case on a shared machine, are the upper end; converged ones stop sooner."""
    rounds = rounds_for(policy, call_s)
    per = policy.per_round(rounds, warm_call_s=call_s)
    sampling = max(call_s, min(per.max_time_s, per.max_samples * call_s))
    return setup_s + rounds * (per.warmup_s + call_s + sampling)


def skip_reason(point: Point, backend, extension_state) -> str | None:
    """Why a run would skip the pair, asking nothing of the machine but the extension's build
    stamp (`extension_state()`: extension.status, read once)."""
    case = point.case
    try:
        case.validate()
    except InvalidProblemError as error:
        return str(error)
    if backend.needs_extension:
        built = extension_state()
        if built is not None and not built.ok:
            return built.reason
    if isinstance(case, ModelCase):
        from natbench import models

        return models.supports(backend, case, machine=False)
    reason = backend.capability_reason(case)
    if reason is None and not backend.needs_extension:
        reason = backend.supports_extra(case)
    return reason


def make_plan(points: list[Point], names: list[str], device: str, policy: TimingPolicy,
              costs: Costs, done: set[tuple[str, str]] = frozenset()) -> Plan:
    """The plan of measuring every (point, backend) not in `done` under `policy`."""
    from functools import cache

    from natbench.backends import get_backend
    from natbench.extension import status

    extension_state = cache(status)
    pairs = []
    for point in points:
        for name in names:
            if (point.case.key, name) in done:
                continue
            backend = get_backend(name)
            reason = skip_reason(point, backend, extension_state)
            if reason:
                pairs.append(PlannedPair(point, name, reason, 0.0, SKIPPED_S, "skipped"))
                continue
            call_s, source = costs.call(point, backend, device)
            setup = costs.setup.get(name, STATED_SETUP_S)
            pairs.append(PlannedPair(point, name, None, call_s,
                                     pair_seconds(call_s, policy.for_backend(name), setup), source))
    dtypes = {p.point.case.dtype for p in pairs if p.skip is None}
    parts = {"worker start": WORKER_START_S if pairs else 0.0,
             "calibration": CALIBRATION_S * len(dtypes),
             "round probes": PROBE_S * len(dtypes) * policy.rounds}
    compiling = [p for p in pairs if p.skip is None and get_backend(p.backend).compiles]
    if compiling:
        parts["compiling ahead"] = costs.compile_s if costs.compile_s is not None else \
            STATED_COMPILE_S * len(compiling)
    if any(p.skip is None and get_backend(p.backend).needs_extension for p in pairs) and extension_state() is None:
        parts["building the extension"] = STATED_BUILD_S
    source = costs.source or f"stated rates ({STATED_RATE[device]:.0e} FLOP/s on {device})"
    return Plan(pairs, parts, source)


def costs_file(given: Path | None, suite_name: str, device: str, search: Path | None = None):
    """The results file to take costs from: `given`, else the newest file in `search` of the same
    suite measured on this kind of machine (None when there is none). Loads it."""
    from natbench import store

    if given is not None:
        return store.load(given)
    if search is None or not search.is_dir():
        return None
    from natbench.env import machine_identity

    here = machine_identity(device)
    for path in sorted(search.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            header = store.read_header(path)
        except Exception:  # not a results file: not a source of costs
            continue
        env = header.get("env", {})
        if header.get("suite") == suite_name and all(env.get(k) == v for k, v in here.items()):
            return store.load(path)
    return None
