"""Suites: TOML files -> Suite -> expand() into cases. Errors cite file, line and key.

A suite file has these parts (all optional but `case`):

    description = "..."
    backends = ["torch", "swin"]          # run order within each case
    [case]                                # one value per axis: the defaults
    rank = 2
    kernel_size = 7
    [sweep]                               # axes swept as a cartesian product
    kernel_size = [3, 5, 7]
    [[zip]]                               # lists of equal length that advance together
    resolution = [56, 28]
    heads = [2, 4]
    [timing]                              # TimingPolicy fields, e.g. max_time_s = 2.0
    [timing.backends.natten-lib]          # the same fields for one backend, e.g. max_time_s = 2.5
    [timing.cpu]                          # [timing]'s fields (and backends) on one device only:
    [timing.cpu.backends.natten-lib]      #   cpu or cuda, the run's --device
    [gate]                                # natbench gate thresholds, e.g. latency = 0.2

`label` may be swept or zipped like an axis: it names cases in tables (e.g. "NAT-Tiny").
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from natbench.case import DEVICES, Case, ModelCase
from natbench.errors import InvalidProblemError, SuiteError
from natbench.paths import SUITES
from natbench.timing import TimingPolicy
AXES = ("rank", "batch", "heads", "head_dim", "resolution", "kernel_size", "dilation", "stride",
        "is_causal", "rpb", "dtype", "device", "pass", "label", "model", "image_size")
TOP_KEYS = ("description", "backends", "baseline", "case", "sweep", "zip", "timing", "gate")
GATE_KEYS = ("latency", "memory", "flops")  # natbench gate's thresholds, as fractions
TIMING_KEYS = tuple(f.name for f in fields(TimingPolicy))
# [timing] also holds a table per device: [timing]'s fields for runs on that device only.
SUITE_TIMING_KEYS = TIMING_KEYS + DEVICES
BACKEND_TIMING_KEYS = tuple(k for k in TIMING_KEYS if k not in ("threads", "backends"))
DEFAULTS = {"rank": 2, "batch": 1, "heads": 4, "head_dim": 32, "resolution": 56, "kernel_size": 7,
            "dilation": 1, "stride": 1, "is_causal": False, "rpb": False, "dtype": "float32",
            "device": "cpu", "pass": "fwd", "label": "", "model": "", "image_size": 224}


@dataclass(frozen=True)
class Point:
    """One expanded case with the label it carries in tables."""

    case: Case | ModelCase
    label: str = ""


@dataclass
class Suite:
    name: str
    path: Path | None
    description: str = ""
    backends: list[str] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    sweep: dict = field(default_factory=dict)
    zips: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    baseline: str | None = None  # the backend every other is compared with in tables and reports

    def with_overrides(self, overrides: dict[str, list]) -> Suite:
        """Replace axes by `--set AXIS=v1,v2` values: one value overrides, several sweep."""
        sweep, zips = dict(self.sweep), [dict(group) for group in self.zips]
        defaults = dict(self.defaults)
        for axis, values in overrides.items():
            for group in zips:
                group.pop(axis, None)
            sweep.pop(axis, None)
            if len(values) == 1:
                defaults[axis] = values[0]
            else:
                sweep[axis] = list(values)
        zips = [group for group in zips if group]
        return Suite(self.name, self.path, self.description, self.backends, defaults, sweep,
                     zips, self.timing, self.gate, self.baseline)

    def policy(self, device: str | None = None, **overrides) -> TimingPolicy:
        """The [timing] table, then the run's device's [timing.DEVICE] (its fields replace
        [timing]'s, its [timing.DEVICE.backends.NAME] fields those of [timing.backends.NAME]),
        then the command line's values, which hold for every backend: they replace the same
        fields of each backend's table too. `device` None: [timing] alone."""
        given = {k: v for k, v in overrides.items() if v is not None}
        general = {k: v for k, v in self.timing.items() if k not in DEVICES}
        own = self.timing.get(device, {}) if device else {}
        backends = {}
        for table in (general.get("backends", {}), own.get("backends", {})):
            for name, values in table.items():
                backends[name] = {**backends.get(name, {}),
                                  **{k: v for k, v in values.items() if k not in given}}
        values = {**general, **own, **given, "backends": {k: v for k, v in backends.items() if v}}
        try:
            return TimingPolicy(**values)
        except SuiteError as error:
            tables = f"[timing] or [timing.{device}]" if own else "[timing]"
            raise SuiteError(f"{self.where()}, {tables} or its option: {error}") from None

    def expand(self) -> list[Point]:
        """Every case of the suite, in file order: sweep axes outer, zip groups inner."""
        choices = [[{axis: value} for value in values] for axis, values in self.sweep.items()]
        for group in self.zips:
            length = len(next(iter(group.values())))
            choices.append([{axis: values[i] for axis, values in group.items()}
                            for i in range(length)])
        points = []
        for combination in itertools.product(*choices):
            values = {**DEFAULTS, **self.defaults}
            for part in combination:
                values.update(part)
            points.append(self._point(values))
        return points

    def _point(self, values: dict) -> Point:
        label = str(values.pop("label"))
        pass_ = values.pop("pass")
        model, image_size = values.pop("model"), values.pop("image_size")
        try:
            if model:  # a network: the attention axes do not apply
                case = ModelCase.build(model, image_size, values["batch"], values["dtype"], values["device"], pass_)
                case.validate()
                return Point(case, label)
            return Point(Case.build(pass_=pass_, **values), label)
        except (InvalidProblemError, TypeError, ValueError) as error:
            raise SuiteError(f"{self.where()}: {error}") from None

    def where(self) -> str:
        return str(self.path) if self.path else f"suite {self.name!r}"


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise SuiteError(f"suite file {path} does not exist.")
        return path
    candidate = SUITES / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    close = difflib.get_close_matches(name_or_path, suite_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SuiteError(f"unknown suite {name_or_path!r}; {hint}suites: {', '.join(suite_names())}; "
                     f"or pass a path to a .toml file.")


def load(name_or_path: str) -> Suite:
    path = resolve(name_or_path)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{path}: not valid TOML: {error}") from None
    checker = _Checker(path, text)
    checker.keys(data, TOP_KEYS, None)
    if "case" not in data:
        raise SuiteError(f"{path}: no [case] table; add one with the problem's defaults.")
    backends = data.get("backends", [])
    if not isinstance(backends, list) or not all(isinstance(b, str) for b in backends):
        raise SuiteError(f"{checker.at('backends')}: backends must be a list of names.")
    from natbench.backends import backend_names

    for name in backends:
        if name not in backend_names():
            raise SuiteError(f"{checker.at('backends')}: unknown backend {name!r}"
                             f"{_suggest(name, backend_names())}.")
    baseline = data.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline not in (backends or backend_names())):
        raise SuiteError(f"{checker.at('baseline')}: baseline must be one of the suite's backends "
                         f"({', '.join(backends or backend_names())}), got {baseline!r}.")
    defaults = checker.table(data, "case", AXES)
    sweep = checker.table(data, "sweep", AXES)
    for axis, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise SuiteError(f"{checker.at(axis, 'sweep')}: sweep.{axis} must be a non-empty list.")
    zips = data.get("zip", [])
    if not isinstance(zips, list):
        raise SuiteError(f"{checker.at('zip')}: use [[zip]] tables (an array of tables).")
    for group in zips:
        checker.keys(group, AXES, "[zip]")
        lengths = {axis: len(v) if isinstance(v, list) else -1 for axis, v in group.items()}
        if len(set(lengths.values())) != 1 or -1 in lengths.values():
            raise SuiteError(f"{checker.at(next(iter(group)), '[zip]')}: every key of a [[zip]] "
                             f"group must be a list of the same length; got lengths {lengths}.")
    timing = checker.table(data, "timing", SUITE_TIMING_KEYS)
    tables = {"timing": timing, **{f"timing.{device}": checker.table(timing, device, TIMING_KEYS,
                                                                     "timing")
                                   for device in DEVICES}}
    for parent, table in tables.items():
        per_backend = checker.table(table, "backends", backend_names(), parent)
        for name in per_backend:
            checker.table(per_backend, name, BACKEND_TIMING_KEYS, f"{parent}.backends")
    gate = checker.table(data, "gate", GATE_KEYS)
    for metric, value in gate.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise SuiteError(f"{checker.at(metric, 'gate')}: gate.{metric} must be a fraction >= 0, "
                             f"e.g. 0.1 for 10%.")
    suite = Suite(path.stem, path, data.get("description", ""), backends, defaults, sweep, zips,
                  timing, gate, baseline)
    suite.expand()  # surfaces bad values now, with the file's name
    for device in (None, *DEVICES):
        suite.policy(device)
    return suite


# How --set reads each axis's values: a positive int, one per spatial axis as `56x48`, a boolean,
# booleans per axis as `truexfalse`, or a word (checked where it is used: dtype, device, pass).
_INT_AXES = ("rank", "batch", "heads", "head_dim", "image_size")
_PER_AXIS_INTS = ("resolution", "kernel_size", "dilation", "stride")


def parse_set(option: str) -> tuple[str, list]:
    """`AXIS=v1,v2` -> (axis, values), each value checked against the axis's type now, so that a
    bad value stops the command before anything runs."""
    if "=" not in option:
        raise SuiteError(f"--set {option!r}: expected AXIS=VALUE[,VALUE...], e.g. --set kernel_size=3,5,7.")
    axis, _, text = option.partition("=")
    axis = axis.strip().replace("-", "_")
    if axis not in AXES:
        raise SuiteError(f"--set {option!r}: unknown axis {axis!r}{_suggest(axis, AXES)}; "
                         f"axes: {', '.join(AXES)}.")
    values = [_value(axis, part.strip(), option) for part in text.split(",") if part.strip()]
    if not values:
        raise SuiteError(f"--set {option!r}: no value after '='.")
    return axis, values


def _value(axis: str, text: str, option: str):
    lowered = text.lower()
    if axis in _INT_AXES or axis in _PER_AXIS_INTS:
        per_axis = axis in _PER_AXIS_INTS and "x" in lowered
        parts = lowered.split("x") if per_axis else [lowered]
        for part in parts:
            if not re.fullmatch(r"[+-]?\d+", part):
                example = f"{axis}=7, or 7x5 with one value per axis" if axis in _PER_AXIS_INTS else f"{axis}=2"
                raise SuiteError(f"--set {option!r}: {text!r} is not an integer; e.g. --set {example}.")
            if int(part) < 1:
                raise SuiteError(f"--set {option!r}: {axis} {int(part)} < 1; use a positive {axis}.")
        return [int(part) for part in parts] if per_axis else int(parts[0])
    if axis in ("rpb", "is_causal"):
        parts = lowered.split("x") if axis == "is_causal" else [lowered]
        if any(part not in ("true", "false") for part in parts):
            example = "true, false, or truexfalse per axis" if axis == "is_causal" else "true or false"
            raise SuiteError(f"--set {option!r}: {text!r} is not a boolean; use {example}.")
        return [part == "true" for part in parts] if len(parts) > 1 else parts[0] == "true"
    return text


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Unknown-key checks whose messages carry the file and the key's line."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def line_of(self, key: str, table: str | None = None) -> int | None:
        """The line of `key = ...` in `table` (None: the top level), or, for a key that names a
        table, of its first header (`[table.key]`, `[table.key.backends.torch]`)."""
        inside = table is None
        header = None if table is None else table.strip("[]")
        path = f"{header}.{key}" if header else key
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip()
            if stripped.startswith("["):
                name = stripped.strip("[]").replace('"', "").strip()
                if name == path or name.startswith(f"{path}."):
                    return number
                inside = inside if header is None else name == header
                continue
            if inside and re.match(rf"{re.escape(key)}\s*=", stripped):
                return number
        return None

    def at(self, key: str, table: str | None = None) -> str:
        line = self.line_of(key, table)
        return f"{self.path}:{line}: key {key!r}" if line else f"{self.path}: key {key!r}"

    def keys(self, data: dict, allowed, table: str | None) -> None:
        for key in data:
            if key not in allowed:
                raise SuiteError(f"{self.at(key, table)}: unknown key{_suggest(key, allowed)}; "
                                 f"allowed here: {', '.join(allowed)}.")

    def table(self, data: dict, name: str, allowed, parent: str | None = None) -> dict:
        """data[name], a table whose keys must be in `allowed`; `parent`: the table data is."""
        value = data.get(name, {})
        full = f"{parent}.{name}" if parent else name
        if not isinstance(value, dict):
            raise SuiteError(f"{self.at(name, parent)}: {full} must be a table ([{full}]).")
        self.keys(value, allowed, full)
        return value
