"""A benchmark session: header, calibration, the interleaved loop over cases and backends, the
results file, and what the user sees. Used by `run` (and `compare`)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from natbench import store
from natbench.console import (Sink, load_warning, noise_warning, results_table, single_sample_warning,
                              skip_reasons, step_warning, threads_text)
from natbench.suite import Point, Suite
from natbench.timing import TimingPolicy


def execute(suite: Suite, points: list[Point], backends: list[str], device: str, path: Path,
            resume: bool, policy: TimingPolicy, sink: Sink, show_table: bool = True) -> list[dict]:
    """Measure every (case, backend) pair, appending each row to `path` as it finishes.

    Ctrl-C stops the loop; everything finished is on disk and `--resume` continues it.
    """
    from natbench.backends import get_backend
    from natbench.calibrate import calibrate
    from natbench.env import collect, cpu_threads, memory_cap, pin_allocator
    from natbench.runner import RunContext

    allocator = pin_allocator()
    with memory_cap(device) as cap, cpu_threads(policy.threads):
        old = store.resumable(path, resume)
        done = {store.row_key(r) for r in old.rows} if old else set()
        compile_s, prepared = _prepare([(p, b) for p in points for b in backends
                                        if (p.case.key, b) not in done], sink)
        compiled = any(get_backend(b).needs_extension for b in backends)
        header = {**collect(device, suite.name, build_extension=compiled), "suite_file": str(suite.path),
                  "backends": backends, "policy": policy.__dict__, **prepared}
        header["env"].update(allocator)
        header["env"].update(cap)
        writer = store.ResultsWriter(path, header, resume)
        context = RunContext(policy, compile_s=compile_s)
        todo = [(p, b) for p in points for b in backends if (p.case.key, b) not in writer.done]
        first = first_rounds([(p, b) for p in points for b in backends], policy)
        sink.info(f"{suite.name}: {len(points)} cases x {len(backends)} backends on {device}, "
                  f"{policy.rounds} rounds, {threads_text(header['env']['torch_threads'])}; "
                  f"{len(todo)} to measure; results -> {path}")
        rows = []
        try:
            for dtype in sorted({p.case.dtype for p, _ in todo}):
                if (device, dtype) not in writer.calibrations:
                    sink.info(f"calibrating {device} {dtype} matmul and copy bandwidth")
                    writer.write(calibrate(device, dtype).to_record())
            context.calibrations = writer.calibrations
            with sink.progress(len(todo) * policy.rounds) as advance:
                for round_ in range(policy.rounds):
                    for point, backend in round_order(todo, round_):
                        row = _step(point, backend, round_, writer, context,
                                    first.get((point.case.key, backend), 0))
                        if row is not None:
                            rows.append(row)
                            if sink.json_mode:
                                sink.json(row)
                        advance(f"round {round_ + 1}: {backend} {point.label or ''} {point.case.key}")
        except KeyboardInterrupt:
            writer.close()
            sink.warn(f"interrupted: {len(rows)} rows are on disk in {path}; continue with "
                      f"`natbench run --suite {suite.path or suite.name} --out {path} --resume`.")
            raise
        writer.close()
    everything = store.load(path).rows
    if show_table:
        report(everything, backends, f"{suite.name} on {device}: median latency ±95% CI half-width, "
               f"peak extra memory", sink)
    sink.info(f"results: {path}")
    return everything


def _prepare(pairs: list[tuple[Point, str]], sink: Sink) -> tuple[dict, dict]:
    """Compile ahead what the backends compile on a first call (flex) while the extension builds
    in a child process: on a 2-core CPU both take about a minute when cold, one core each. Returns
    the seconds per pair and the header's record of the phase (nothing when no backend compiles:
    the header's environment then builds the extension if a backend needs it)."""
    from natbench.backends import get_backend
    from natbench.extension import start_build
    from natbench.runner import compile_ahead

    names = sorted({b for _, b in pairs if get_backend(b).compiles})
    if not names:
        return {}, {}
    building = any(get_backend(b).needs_extension for _, b in pairs)
    sink.info(f"compiling {', '.join(names)} ahead of measuring"
              + (", while the extension builds" if building else ""))
    begin = time.perf_counter()
    build = start_build() if building else None
    compile_s = compile_ahead(pairs)
    compiled = time.perf_counter() - begin
    if build is not None:
        build.wait()
    return compile_s, {"prepare": {"backends": names, "compile_s": compiled,
                                   "wall_s": time.perf_counter() - begin}}


def _step(point: Point, backend: str, round_: int, writer: store.ResultsWriter, context,
          first_round: int = 0) -> dict | None:
    """Measure one round of a pair (unless it is on disk already); returns its row when done.

    Rounds are interleaved over the whole suite: round 2 of the first case runs minutes after
    round 1, so the machine's drift shows in the spread between rounds. A pair too slow for every
    round within its time budget (TimingPolicy.rounds_for) has its rounds spread evenly over its
    backend's span of rounds (round_span). A pair is first measured in `first_round` (see
    first_rounds).
    """
    from natbench.env import cpu_usage, load_between
    from natbench.runner import merge_rounds, run_pair, time_again

    key = (point.case.key, backend)
    rounds = writer.rounds.setdefault(key, [])
    if key in writer.done or any(r["round"] == round_ for r in rounds):
        return None
    if not rounds and round_ != first_round:
        return None
    total = context.policy.rounds
    if rounds:
        first = rounds[0]["round"]
        span = round_span(context.policy.for_backend(backend).rounds, total)
        # within the run even for a file begun under another schedule (resumed)
        last = min(first + span, total - 1)
        if round_ not in scheduled_rounds(_planned(rounds, total), first, last):
            return None
    started_at = time.time()
    begin, usage = time.perf_counter(), cpu_usage()
    record = run_pair(point, backend, context) if not rounds else \
        {**rounds[0], **time_again(point, backend, context, _planned(rounds, total))}
    record.update(record="round", round=round_, started_at=started_at,
                  round_s=time.perf_counter() - begin, **load_between(usage, cpu_usage()))
    writer.write(record)
    rounds.append(record)
    if record["status"] != "ok" or len(rounds) >= _planned(rounds, total):
        row = merge_rounds(rounds, context)
        writer.write(row)
        return row
    return None


def first_rounds(pairs: list[tuple[Point, str]], policy: TimingPolicy) -> dict[tuple[str, str], int]:
    """The round in which a pair is first measured, for the pairs not measured first in round 0:
    those of a backend whose policy gives it fewer rounds than the run (natten-lib in
    kernel-sizes, ~1 s a call), spread evenly over the rounds its span (round_span) leaves to
    start in. All started in round 0, such slow pairs would fill the first half of the run and
    squeeze every other pair's later rounds into the second. From the suite's pairs, not what is
    left of them: a resumed run keeps them."""
    own = {backend: policy.for_backend(backend).rounds for _, backend in pairs}
    spread: dict[str, list[str]] = {}
    for point, backend in pairs:
        if own[backend] < policy.rounds:
            spread.setdefault(backend, []).append(point.case.key)
    starts = {backend: policy.rounds - round_span(own[backend], policy.rounds) for backend in spread}
    return {(key, backend): i * starts[backend] // len(keys)
            for backend, keys in spread.items() for i, key in enumerate(keys)}


def round_span(own: int, total: int) -> int:
    """How many rounds apart a pair's first and last rounds lie, for a backend of `own` of the
    run's `total` rounds: all of the run for a backend of every round; for fewer, the run less
    about one spacing of its rounds, so that its pairs start in that many rounds (loading the
    run's rounds evenly) and each pair's rounds lie equally far apart. Spread over every round
    that leaves room to end in the last instead, late starters would take their calls one round
    apart (rounds 5, 6, 7 of 8) and every pair would end in the last round."""
    if own >= total:
        return total - 1
    return (total - 1) - (total - 1) // own


def round_order(todo: list[tuple[Point, str]], round_: int) -> list[tuple[Point, str]]:
    """The pairs in the order one round measures them: the suite's order in round 0, then the
    cases shuffled (seeded by the round, so a resumed run repeats it), each case's backends kept
    together. A host disturbance that recurs at about the period of a round would otherwise hit
    the same cases in every round (Google Benchmark's random interleaving avoids the same
    aliasing); keeping a case's backends adjacent keeps them measured in the same machine state,
    which `compare` relies on."""
    if round_ == 0:
        return todo
    cases: dict[str, list[tuple[Point, str]]] = {}
    for pair in todo:
        cases.setdefault(pair[0].case.key, []).append(pair)
    groups = list(cases.values())
    random.Random(round_).shuffle(groups)
    return [pair for group in groups for pair in group]


def _planned(rounds: list[dict], total: int) -> int:
    """The rounds a pair gets, from its first round's record (files from before the field: all)."""
    return min(rounds[0].get("rounds_planned", total), total)


def scheduled_rounds(planned: int, first: int, last: int) -> set[int]:
    """Which rounds a pair with `planned` rounds runs in: evenly from `first` to `last`."""
    if planned <= 1:
        return {first}
    return {first + round(i * (last - first) / (planned - 1)) for i in range(planned)}


def report(rows: list[dict], backends: list[str], title: str, sink: Sink) -> None:
    sink.table(results_table(rows, backends, title))
    for line in skip_reasons(rows):
        sink.info(f"  {line}")
    for warning in (noise_warning(rows), single_sample_warning(rows), load_warning(rows),
                    step_warning(rows)):
        if warning:
            sink.warn(warning)
    wrong = [r for r in rows if r.get("check") == "fail"]
    if wrong:
        sink.warn(f"{len(wrong)} rows computed a wrong answer (WRONG above): their timings are "
                  f"not results.")
