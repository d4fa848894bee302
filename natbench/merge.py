"""The shards of a sharded run (`natbench run --shard I/N`) joined into one results file that
reads as if one process had measured the whole suite: every calibration, probe, round and row
of every shard, each tagged with its shard, under the first shard's header whose `shard` record
then lists the shards it came from.

Files are refused (naming the key) when they come from different suites or setups: another
suite, backend list, timing policy or plan (any option but --shard), or another kind of machine
(store.MUST_MATCH); and when two shards measured the same pair, or when pairs of the suite have
no row in any of them, unless the missing ones are allowed (then the header lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from natbench import store
from natbench.errors import ResultsError

# The header fields that must agree between shards, beside the machine's (store.MUST_MATCH).
SAME_RUN = ("suite", "backends", "baseline", "policy")
# Plan options that may differ between shards: which shard it is.
PER_SHARD = ("shard",)


@dataclass
class Merged:
    path: Path
    rows: int
    shards: list[str]  # "I/N" of each file
    missing: list[tuple[str, str]]  # (case key, backend) without a row


def _expected(results: store.Results) -> tuple[list[str], int] | None:
    shard = results.header.get("shard")
    if not shard:
        return None
    return shard["suite_cases"], shard["count"]


def _refuse_other_setups(loaded: list[store.Results]) -> None:
    first = loaded[0]
    for other in loaded[1:]:
        differ = store.mismatches(first.header, other.header)
        for key in SAME_RUN:
            if first.header.get(key) != other.header.get(key):
                differ.append(f"{key}: {first.header.get(key)!r} != {other.header.get(key)!r}")
        plan_a, plan_b = first.header.get("plan") or {}, other.header.get("plan") or {}
        for key in sorted(set(plan_a) | set(plan_b)):
            if key not in PER_SHARD and plan_a.get(key) != plan_b.get(key):
                differ.append(f"plan {key}: {plan_a.get(key)!r} != {plan_b.get(key)!r}")
        a_expected, b_expected = _expected(first), _expected(other)
        if a_expected and b_expected and a_expected != b_expected:
            differ.append(f"shard count or suite cases: {a_expected[1]} shards != {b_expected[1]}"
                          if a_expected[1] != b_expected[1] else "shard record's suite cases differ")
        if differ:
            raise ResultsError(f"{other.path} is not a shard of the same run as {first.path}: "
                               f"{'; '.join(differ)}. Merge only the shards of one sweep.")


def merge(paths: list[Path], out: Path, allow_missing: bool = False, force: bool = False) -> Merged:
    """Join the shard files `paths` into `out` (refused when it exists, unless `force`)."""
    if not paths:
        raise ResultsError("merge needs the shard files to join.")
    if out.exists() and not force:
        raise ResultsError(f"{out} already exists; choose another --out, or pass --force to replace it.")
    loaded = [store.load(path) for path in paths]
    _refuse_other_setups(loaded)
    owner: dict[tuple[str, str], Path] = {}
    overlaps = []
    for results in loaded:
        for row in results.rows:
            key = store.row_key(row)
            if key in owner:
                overlaps.append(f"{key[1]} {key[0]} ({owner[key].name} and {results.path.name})")
            owner.setdefault(key, results.path)
    if overlaps:
        raise ResultsError(f"{len(overlaps)} pairs were measured by more than one file: "
                           f"{'; '.join(overlaps[:3])}{' ...' if len(overlaps) > 3 else ''}. Each pair "
                           f"belongs to one shard; merge each shard's file once.")
    labels, indices = [], set()
    for results in loaded:
        shard = results.header.get("shard")
        labels.append(f"{shard['index']}/{shard['count']}" if shard else "whole")
        if shard:
            indices.add(shard["index"])
    expected = _expected(loaded[0])
    missing = []
    if expected is not None:
        cases, count = expected
        backends = loaded[0].header.get("backends") or []
        missing = [(case, backend) for case in cases for backend in backends if (case, backend) not in owner]
        absent = sorted(set(range(1, count + 1)) - indices)
        if missing and not allow_missing:
            where = f" (shards {', '.join(f'{i}/{count}' for i in absent)} not given)" if absent else ""
            listed = "; ".join(f"{b} {c}" for c, b in missing[:3])
            raise ResultsError(f"{len(missing)} pairs of the suite have no row{where}: {listed}"
                               f"{' ...' if len(missing) > 3 else ''}. Give every shard's file, resume the "
                               f"unfinished ones (natbench run --out SHARD --resume), or pass "
                               f"--allow-missing to merge what there is.")
    _write(loaded, labels, missing, out)
    return Merged(out, len(owner), labels, missing)


def _write(loaded: list[store.Results], labels: list[str], missing: list, out: Path) -> None:
    header = {k: v for k, v in loaded[0].header.items() if k not in ("record", "schema")}
    header["started_at"] = min(r.header.get("started_at") or "" for r in loaded) or None
    if header.get("plan"):
        header["plan"] = {**header["plan"], "shard": None}  # the whole suite's plan
    header["shard"] = {
        "merged": [{"file": str(r.path), "shard": label, "hostname": r.header.get("env", {}).get("hostname"),
                    "git_commit": r.header.get("env", {}).get("git_commit"),
                    "started_at": r.header.get("started_at")} for r, label in zip(loaded, labels)],
        "missing": [list(pair) for pair in missing],
    }
    if out.exists():
        out.unlink()
    writer = store.ResultsWriter(out, header)
    try:
        for results, label in zip(loaded, labels):
            for record in (*results.calibrations, *results.probes, *results.rounds, *results.rows):
                writer.write({**record, "shard": label})
    finally:
        writer.close()
