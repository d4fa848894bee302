"""A benchmark session: header, calibration, the interleaved loop over cases and backends and
the results file. Used by `run`, `compare` and `gate`. It shows nothing itself: it tells a
watcher (console.RunWatch) what it is doing, and returns the rows for the command to render.
"""

from __future__ import annotations

import time
from pathlib import Path

from natbench import store, timing
from natbench.schedule import due, first_rounds, planned, round_order
from natbench.suite import Point, Suite
from natbench.timing import TimingPolicy


def execute(suite: Suite, points: list[Point], backends: list[str], device: str, path: Path,
            resume: bool, policy: TimingPolicy, watch, plan: dict | None = None,
            retry_crashed: bool = False, shard: dict | None = None) -> list[dict]:
    """Measure every (case, backend) pair, appending each row to `path` as it finishes; returns
    every row of the file. `watch` hears of each step (console.RunWatch has the methods); `plan`,
    the options the run was asked with, goes into the header so that --resume continues it, and
    so does `shard`, the record of the part of the suite a sharded run measures (`points` are
    that part's).

    The measuring happens in a worker process (natbench/worker.py): a pair that kills it or
    overruns its deadline becomes a `crashed` or `timeout` row, and a fresh worker goes on. A
    resumed run leaves crashed pairs alone unless `retry_crashed`. Ctrl-C stops the loop;
    everything finished is on disk and `--resume` continues it.
    """
    from natbench.backends import get_backend
    from natbench.env import collect
    from natbench.runner import RunContext
    from natbench.worker import executor, measuring_setup

    old = store.resumable(path, resume)
    done = store.finished(old, retry_crashed) if old else set()
    with executor(measuring_setup(device, policy)) as worker:
        compile_s, prepared = _prepare([(p, b) for p in points for b in backends
                                        if (p.case.key, b) not in done], watch, worker, policy)
        compiled = any(get_backend(b).needs_extension for b in backends)
        header = {**collect(device, suite.name, build_extension=compiled), "suite_file": str(suite.path),
                  "backends": backends, "baseline": suite.baseline, "policy": policy.__dict__, **prepared,
                  **({"plan": plan} if plan is not None else {}), **({"shard": shard} if shard else {})}
        header["env"].update(worker.environment)
        writer = store.ResultsWriter(path, header, resume, retry_crashed)
        context = RunContext(policy, compile_s=compile_s)
        todo = [(p, b) for p in points for b in backends if (p.case.key, b) not in writer.done]
        first = first_rounds([(p, b) for p in points for b in backends], policy)
        watch.starting(suite.name, len(points), len(backends), device, policy.rounds,
                       header["env"]["torch_threads"], len(todo), path)
        rows = []
        calibration_deadline = policy.call_timeout_s + _CALIBRATION_S
        try:
            dtypes = sorted({p.case.dtype for p, _ in todo})
            for dtype in dtypes:
                if (device, dtype) not in writer.calibrations:
                    watch.calibrating(device, dtype)
                    writer.write(worker.call("calibrate", device, dtype, timeout=calibration_deadline))
            context.calibrations = writer.calibrations
            for row in _rows_of_finished_rounds(todo, writer, context):
                rows.append(row)
                watch.finished(row)
            worker.call("context", compile_s, writer.calibrations)
            with watch.progress(len(todo) * policy.rounds) as advance:
                for round_ in range(policy.rounds):
                    for dtype in dtypes:
                        writer.write(worker.call("probe", device, dtype, round_, timeout=calibration_deadline))
                    for point, backend in round_order(todo, round_):
                        row = _step(point, backend, round_, writer, context, worker,
                                    first.get((point.case.key, backend), 0))
                        if row is not None:
                            rows.append(row)
                            watch.finished(row)
                        advance(f"round {round_ + 1}: {backend} {point.label or ''} {point.case.key}")
        except KeyboardInterrupt:
            worker.kill()
            writer.close()
            pending = sum(len(r) for key, r in writer.rounds.items() if key not in writer.done)
            command = (f"natbench run --out {path} --resume" if plan is not None else
                       f"natbench run --suite {suite.path or suite.name} --out {path} --resume")
            watch.interrupted(len(writer.done), pending, path, command)
            raise
        writer.close()
    return store.load(path).rows


def _prepare(pairs: list[tuple[Point, str]], watch, worker, policy: TimingPolicy) -> tuple[dict, dict]:
    """Compile ahead, in the worker, what the backends compile on a first call (flex) while the
    extension builds in a child process: on a 2-core CPU both take about a minute when cold, one
    core each. Returns the seconds per pair and the header's record of the phase (nothing when no
    backend compiles: the header's environment then builds the extension if a backend needs
    it). A pair whose compile kills the worker or overruns --call-timeout is left for its
    measurement to record."""
    from natbench.backends import get_backend
    from natbench.extension import start_build
    from natbench.worker import WorkerDied, WorkerTimeout

    compiling = [(p, b) for p, b in pairs if get_backend(b).compiles]
    if not compiling:
        return {}, {}
    names = sorted({b for _, b in compiling})
    building = any(get_backend(b).needs_extension for _, b in pairs)
    watch.preparing(names, building)
    begin = timing.CLOCK.now()
    build = start_build() if building else None
    compile_s = {}
    for pair in compiling:
        try:
            compile_s.update(worker.call("compile_ahead", [pair], timeout=policy.call_timeout_s))
        except (WorkerDied, WorkerTimeout):
            worker.restart()
    compiled = timing.CLOCK.now() - begin
    if build is not None:
        build.wait()
    return compile_s, {"prepare": {"backends": names, "compile_s": compiled,
                                   "wall_s": timing.CLOCK.now() - begin}}


# The calibration's own time budget (calibrate.py: two measurements of at most 2.2 s each), beyond
# which its deadline adds --call-timeout.
_CALIBRATION_S = 5.0


def _pair_done(rounds: list[dict], total: int) -> bool:
    """A pair's rounds end with a failed round or when it has all it was planned."""
    return rounds[-1]["status"] != "ok" or len(rounds) >= planned(rounds, total)


def _rows_of_finished_rounds(todo: list[tuple[Point, str]], writer: store.ResultsWriter, context) -> list[dict]:
    """The rows of resumed pairs whose rounds are all on disk (or ended in a failed round) but
    whose row is not: the run that measured them stopped between a pair's last round and its
    row. Written from those rounds, measuring nothing again."""
    from natbench.runner import merge_rounds

    rows = []
    for point, backend in todo:
        rounds = writer.rounds.get((point.case.key, backend))
        if rounds and _pair_done(rounds, context.policy.rounds):
            row = merge_rounds(rounds, context)
            writer.write(row)
            rows.append(row)
    return rows


def _step(point: Point, backend: str, round_: int, writer: store.ResultsWriter, context, worker,
          first_round: int = 0) -> dict | None:
    """Measure one round of a pair (unless it is on disk already); returns its row when done.

    Rounds are interleaved over the whole suite: round 2 of the first case runs minutes after
    round 1, so the machine's drift shows in the spread between rounds. A pair too slow for every
    round within its time budget has its rounds spread over the run, and is first measured in
    `first_round` (schedule.py says which rounds). A round that kills the worker is a `crashed`
    round, one that overruns the budget by --call-timeout a `timeout` round; either ends the pair.
    """
    from natbench.runner import merge_rounds, row_base
    from natbench.worker import measure

    key = (point.case.key, backend)
    rounds = writer.rounds.setdefault(key, [])
    total = context.policy.rounds
    own = context.policy.for_backend(backend)
    if key in writer.done or not due(rounds, round_, first_round, own.rounds, total):
        return None
    started_at = time.time()
    begin = timing.CLOCK.now()
    deadline = own.max_time_s + own.call_timeout_s
    if rounds:
        record = {**rounds[0], **measure(worker, "time_again", point, backend, planned(rounds, total),
                                         row={}, timeout=deadline)}
    else:
        record = measure(worker, "run_pair", point, backend, row=row_base(point, backend), timeout=deadline)
    record.update(record="round", round=round_, started_at=started_at, round_s=timing.CLOCK.now() - begin)
    writer.write(record)
    rounds.append(record)
    if _pair_done(rounds, total):
        row = merge_rounds(rounds, context)
        writer.write(row)
        return row
    return None
