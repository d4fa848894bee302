"""Results files: JSON Lines with a versioned schema (documented in docs/results-schema.md).

Line 1 is the header record (environment, suite, command). Then `calibration` records, a `round`
record per pair and round, and one `row` record per case x backend x pass once its rounds are
done, each appended and flushed as soon as it is measured, so a killed run loses nothing that
finished and `--resume` continues with the missing rounds. Loading tolerates a torn last line (the run was killed
mid-write) and upgrades older schema versions through `_UPGRADES`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from natbench.errors import ResultsError

SCHEMA_VERSION = 1
# Header keys that must match to append to (--resume) or compare runs without --force.
MUST_MATCH = ("device_kind", "gpu_name", "cpu_model", "torch_threads", "torch_version", "cuda_version")
_UPGRADES: dict = {}  # version -> function(record) -> record of version + 1


@dataclass
class Results:
    path: Path
    header: dict
    rows: list[dict] = field(default_factory=list)
    calibrations: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)  # a matmul probe per round (calibrate.probe)
    rounds: list[dict] = field(default_factory=list)
    torn_lines: int = 0

    def calibration(self, device: str, dtype: str) -> dict | None:
        for record in self.calibrations:
            if record["device"] == device and record["dtype"] == dtype:
                return record
        return None


def row_key(record: dict) -> tuple[str, str]:
    return record["case_key"], record["backend"]


def load(path: str | Path) -> Results:
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such results file.")
    lines = path.read_text().splitlines()
    records, torn = [], 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # the last line of a killed run
                torn += 1
                continue
            raise ResultsError(f"{path}:{number}: not a JSON record; the file is damaged.") from None
    if not records or records[0].get("record") != "header":
        raise _not_a_header(path)
    version = records[0].get("schema")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema version {version!r} is newer than this natbench "
                           f"reads ({SCHEMA_VERSION}); upgrade natbench.")
    while version < SCHEMA_VERSION:
        records = [_UPGRADES[version](r) for r in records]
        version += 1
    results = Results(path, records[0], torn_lines=torn)
    rows: dict[tuple[str, str], dict] = {}
    for record in records[1:]:
        kind = record.get("record")
        if kind == "row":
            rows[row_key(record)] = record  # a pair measured again (--retry-crashed) supersedes
        elif kind == "calibration":
            results.calibrations.append(record)
        elif kind == "probe":
            results.probes.append(record)
        elif kind == "round":
            results.rounds.append(record)
    results.rows = list(rows.values())
    return results


def read_header(path: str | Path) -> dict:
    """The header of a results file, reading its first line only."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such results file.")
    with path.open() as stream:
        try:
            header = json.loads(stream.readline())
        except json.JSONDecodeError:
            header = None
    if not isinstance(header, dict) or header.get("record") != "header":
        raise _not_a_header(path)
    return header


def _not_a_header(path: Path) -> ResultsError:
    return ResultsError(f"{path}: the first record is not a natbench header; is this a natbench "
                        f"results file?")


def finished(results: Results, retry_crashed: bool = False) -> set[tuple[str, str]]:
    """The pairs a resume of `results` leaves alone: those with a row, but for crashed ones when
    they are to be measured again."""
    return {row_key(r) for r in results.rows if not (retry_crashed and r["status"] == "crashed")}


def mismatches(a: dict, b: dict) -> list[str]:
    """The must-match header keys on which two runs differ, as 'key: a != b'."""
    out = []
    for key in MUST_MATCH:
        if a.get("env", {}).get(key) != b.get("env", {}).get(key):
            out.append(f"{key}: {a['env'].get(key)!r} != {b['env'].get(key)!r}")
    return out


def resumable(path: str | Path, resume: bool) -> Results | None:
    """What `path` holds when a run resumes it; None for a new file. An existing file is only
    continued with --resume."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    if not resume:
        raise ResultsError(f"{path} already exists; pass --resume to continue it, or --out a new "
                           f"file.")
    return load(path)


class ResultsWriter:
    """Appends records to a JSON Lines file, flushing each to disk as it is written."""

    def __init__(self, path: str | Path, header: dict, resume: bool = False, retry_crashed: bool = False):
        self.path = Path(path)
        self.done: set[tuple[str, str]] = set()
        self.calibrations: dict[tuple[str, str], dict] = {}  # (device, dtype) -> record
        self.rounds: dict[tuple[str, str], list[dict]] = {}  # of pairs without a row yet
        old = resumable(self.path, resume)
        if old is not None:
            differ = mismatches(old.header, header)
            if differ:
                raise ResultsError(f"{self.path} was recorded on another setup ({'; '.join(differ)}); "
                                   f"resume it there, or --out a new file.")
            self.done = finished(old, retry_crashed)
            rowless = {row_key(r) for r in old.rows} - self.done  # measured afresh if retried
            self.calibrations = {(c["device"], c["dtype"]): c for c in old.calibrations}
            for record in old.rounds:
                if row_key(record) not in self.done | rowless:
                    self.rounds.setdefault(row_key(record), []).append(record)
            self._file = self.path.open("a")
            if old.torn_lines:
                self._truncate_torn_tail()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w")
            self.write({"record": "header", "schema": SCHEMA_VERSION, **header})

    def _truncate_torn_tail(self) -> None:
        text = self.path.read_text()
        keep = text[: text.rstrip("\n").rfind("\n") + 1]
        self._file.close()
        self.path.write_text(keep)
        self._file = self.path.open("a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if record.get("record") == "row":
            self.done.add(row_key(record))
        elif record.get("record") == "calibration":
            self.calibrations[(record["device"], record["dtype"])] = record

    def close(self) -> None:
        self._file.close()


def single_sample(row: dict) -> bool:
    """A row of one sample in all (its budget held one call): it has no CI, only the point."""
    return (row.get("ci_method") or "").endswith("/single")


# The case fields in the order rows sort by: the suite's shape first, the swept axes after.
CASE_ORDER = ("label", "model", "image_size", "rank", "batch", "heads", "head_dim", "resolution", "kernel_size", "dilation",
              "stride", "is_causal", "rpb", "dtype", "device", "pass")


def case_order(row: dict) -> tuple:
    """A sort key that puts rows in case order (K = 3, 5, 7, ...; per-axis lists compared as
    tuples), whatever order they were measured in."""
    def value(v):
        if isinstance(v, list):
            return tuple(value(x) for x in v)
        if isinstance(v, bool):
            return int(v)
        return ("", v) if isinstance(v, str) else v

    return tuple((type(row.get(f)).__name__, value(row.get(f))) for f in CASE_ORDER)
