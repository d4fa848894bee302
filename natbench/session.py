"""A benchmark session: header, calibration, the interleaved loop over cases and backends, the
results file, and what the user sees. Used by `run` (and `compare`)."""

from __future__ import annotations

from pathlib import Path

from natbench import store
from natbench.console import Sink, noise_warning, results_table, skip_reasons
from natbench.suite import Point, Suite
from natbench.timing import TimingPolicy


def execute(suite: Suite, points: list[Point], backends: list[str], device: str, path: Path,
            resume: bool, policy: TimingPolicy, sink: Sink, show_table: bool = True) -> list[dict]:
    """Measure every (case, backend) pair, appending each row to `path` as it finishes.

    Ctrl-C stops the loop; everything finished is on disk and `--resume` continues it.
    """
    from natbench.calibrate import calibrate
    from natbench.env import collect, memory_cap, pin_allocator
    from natbench.runner import RunContext

    allocator = pin_allocator()
    with memory_cap(device) as cap:
        header = {**collect(device, suite.name), "suite_file": str(suite.path),
                  "backends": backends, "policy": policy.__dict__}
        header["env"].update(allocator)
        header["env"].update(cap)
        writer = store.ResultsWriter(path, header, resume)
        context = RunContext(policy)
        todo = [(p, b) for p in points for b in backends if (p.case.key, b) not in writer.done]
        sink.info(f"{suite.name}: {len(points)} cases x {len(backends)} backends on {device}, "
                  f"{policy.rounds} rounds; {len(todo)} to measure; results -> {path}")
        rows = []
        try:
            for dtype in sorted({p.case.dtype for p, _ in todo}):
                if (device, dtype) not in writer.calibrations:
                    sink.info(f"calibrating {device} {dtype} matmul and copy bandwidth")
                    writer.write(calibrate(device, dtype).to_record())
            context.calibrations = writer.calibrations
            with sink.progress(len(todo) * policy.rounds) as advance:
                for round_ in range(policy.rounds):
                    for point, backend in todo:
                        row = _step(point, backend, round_, writer, context)
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


def _step(point: Point, backend: str, round_: int, writer: store.ResultsWriter, context) -> dict | None:
    """Measure one round of a pair (unless it is on disk already); returns its row when done.

    Rounds are interleaved over the whole suite: round 2 of the first case runs minutes after
    round 1, so the machine's drift shows in the spread between rounds.
    """
    from natbench.runner import merge_rounds, run_pair, time_again

    key = (point.case.key, backend)
    rounds = writer.rounds.setdefault(key, [])
    if key in writer.done or round_ < len(rounds):
        return None
    record = run_pair(point, backend, context) if round_ == 0 else \
        {**rounds[0], **time_again(point, backend, context)}
    record.update(record="round", round=round_)
    writer.write(record)
    rounds.append(record)
    if record["status"] != "ok" or len(rounds) == context.policy.rounds:
        row = merge_rounds(rounds, context)
        writer.write(row)
        return row
    return None


def report(rows: list[dict], backends: list[str], title: str, sink: Sink) -> None:
    sink.table(results_table(rows, backends, title))
    for line in skip_reasons(rows):
        sink.info(f"  {line}")
    noisy = noise_warning(rows)
    if noisy:
        sink.warn(noisy)
    wrong = [r for r in rows if r.get("check") == "fail"]
    if wrong:
        sink.warn(f"{len(wrong)} rows computed a wrong answer (WRONG above): their timings are "
                  f"not results.")
