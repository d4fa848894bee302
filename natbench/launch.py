"""natbench launch: a suite spread over N jobs through submitit, one shard each
(`natbench run --shard I/N`), watched until they finish, then merged into one results file.

Each job runs `python -m natbench run ... --shard I/N --out DIR/shard-I-of-N.jsonl` in a fresh
process, so that a job measures exactly as a run on that node would (its own worker, rounds,
calibration and probes). A job that is pre-empted or reaches its time limit is requeued by
submitit (the job's `checkpoint`), and its run continues the shard's file with --resume, so
nothing measured is measured again. DIR/launch.json records the plan and the jobs; `launch ...
--resume` submits again only the shards whose files are incomplete.

SLURM gets one job per shard (`--gpus-per-job` GPUs on one node); the local executor runs the
jobs as processes of this machine, at most `parallel` at a time (jobs that share a CPU or GPU
would time each other), each with its own GPUs where there are several.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from natbench.errors import SuiteError

STATE = "launch.json"
INSTALL = "submitit is not installed: pip install 'natbench[cluster]' (or pip install submitit)"
# Seconds between looks at the jobs and the shard files.
POLL_S = 2.0


def shard_file(folder: Path, index: int, count: int) -> Path:
    return folder / f"shard-{index + 1}-of-{count}.jsonl"


def run_command(plan: dict, index: int, count: int, out: Path) -> list[str]:
    """The `natbench run` of shard `index` (0-based) of `count`, with every option of `plan`
    (run_cmd's `given`) that is set."""
    command = [sys.executable, "-m", "natbench", "run", "--suite", str(plan["suite"]), "--shard",
               f"{index + 1}/{count}", "--out", str(out), "--quiet"]
    flags = (("backend", "--backend"), ("device", "--device"), ("dtype", "--dtype"), ("pass_", "--pass"),
             ("max_time", "--max-time"), ("rounds", "--rounds"), ("threads", "--threads"),
             ("call_timeout", "--call-timeout"), ("costs", "--costs"))
    for name, flag in flags:
        if plan.get(name) is not None:
            command += [flag, str(plan[name])]
    for name, flag in (("set_", "--set"), ("backend_module", "--backend-module")):
        for value in plan.get(name) or []:
            command += [flag, str(value)]
    return command


@dataclass
class ShardJob:
    """What a job runs: the shard's `natbench run`, continuing its file where one exists. Called
    again after a requeue (checkpoint), it resumes."""

    command: list[str]
    out: Path
    cwd: str

    def __call__(self) -> str:
        resume = ["--resume"] if self.out.exists() and self.out.stat().st_size else []
        done = subprocess.run(self.command + resume, cwd=self.cwd)
        if done.returncode != 0:
            raise RuntimeError(f"natbench run exited with {done.returncode}: {' '.join(self.command + resume)}")
        return str(self.out)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this when the job is pre-empted or out of time: the job is submitted
        again as it is, and its run resumes the shard's file."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


@dataclass
class Options:
    executor: str  # "slurm" or "local"
    shards: int
    folder: Path
    partition: str | None = None
    gpus_per_job: int = 1
    time_min: int = 60
    cpus_per_job: int | None = None
    slurm_args: dict = field(default_factory=dict)
    parallel: int | None = None  # local: jobs at a time


def parse_slurm_args(values: list[str] | None) -> dict:
    out = {}
    for value in values or []:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            raise SuiteError(f"--slurm-arg {value!r}: use KEY=VALUE, e.g. --slurm-arg account=my_project "
                             f"(becomes #SBATCH --account=my_project).")
        out[key.strip()] = setting.strip()
    return out


def slurm_parameters(options: Options) -> dict:
    """submitit's SlurmExecutor parameters for one job of `options`."""
    params = {"time": options.time_min, "nodes": 1, "ntasks_per_node": 1,
              "gpus_per_node": options.gpus_per_job or None, "job_name": "natbench"}
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_job:
        params["cpus_per_task"] = options.cpus_per_job
    if options.slurm_args:
        params["additional_parameters"] = dict(options.slurm_args)
    return params


def sbatch_text(options: Options, command: list[str]) -> str | None:
    """The sbatch script submitit would write for a job (None where this submitit does not say)."""
    try:
        from submitit.slurm.slurm import _make_sbatch_string
    except ImportError:
        return None
    return _make_sbatch_string(" ".join(command), options.folder / "logs" / "%j", **slurm_parameters(options))


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise SuiteError(f"natbench launch: {INSTALL}.") from None
    return submitit


def visible_gpus() -> int:
    """GPUs this machine shows torch (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_executor(options: Options) -> None:
    """Refuse an executor this machine cannot reach, before anything is written."""
    require_submitit()
    if options.executor == "slurm":
        import shutil

        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise SuiteError(f"--executor slurm: {' and '.join(missing)} not found on this machine's PATH; run "
                             f"natbench launch on the cluster's login node, or use --executor local.")


def make_executor(options: Options):
    submitit = require_submitit()
    logs = options.folder / "logs"
    if options.executor == "slurm":
        executor = submitit.SlurmExecutor(folder=logs)
        executor.update_parameters(**slurm_parameters(options))
    else:
        executor = submitit.LocalExecutor(folder=logs)
        executor.update_parameters(timeout_min=options.time_min)
    return executor


def local_gpus(index: int, per_job: int, available: int) -> list[int]:
    """The GPUs of local job `index`: its own `per_job` of the `available`, round robin."""
    if available == 0 or per_job == 0:
        return []
    return [(index * per_job + j) % available for j in range(per_job)]


def rows_in(path: Path) -> set[tuple[str, str]]:
    """The pairs with a row in a (possibly growing) results file, reading it as text."""
    pairs = set()
    try:
        text = path.read_text()
    except OSError:
        return pairs
    for line in text.splitlines():
        if '"record":"row"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        pairs.add((record["case_key"], record["backend"]))
    return pairs


@dataclass
class Launch:
    """The sweep's state (DIR/launch.json): its plan, shards, and each shard's last job."""

    folder: Path
    plan: dict
    options: dict
    split: list[list[str]]
    backends: list[str]
    jobs: dict = field(default_factory=dict)  # shard index (str) -> job id

    def save(self) -> None:
        state = {"plan": self.plan, "options": self.options, "split": self.split, "backends": self.backends,
                 "jobs": self.jobs}
        (self.folder / STATE).write_text(json.dumps(state, indent=1, default=str))

    @classmethod
    def load(cls, folder: Path) -> Launch:
        path = folder / STATE
        if not path.exists():
            raise SuiteError(f"--resume: {path} does not exist; launch into {folder} without --resume first.")
        state = json.loads(path.read_text())
        return cls(folder, state["plan"], state["options"], state["split"], state["backends"], state["jobs"])

    # per shard file: (its size and mtime when read, the pairs with a row then); a poll reads
    # only the files that changed since
    _read: dict = field(default_factory=dict, repr=False)

    def expected(self, index: int) -> set[tuple[str, str]]:
        return {(case, backend) for case in self.split[index] for backend in self.backends}

    def finished(self, index: int) -> set[tuple[str, str]]:
        """The pairs of shard `index` with a row in its file."""
        path = shard_file(self.folder, index, len(self.split))
        try:
            stat = path.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            return set()
        if self._read.get(path, (None,))[0] != seen:
            self._read[path] = (seen, rows_in(path) & self.expected(index))
        return self._read[path][1]

    def finished_pairs(self) -> int:
        return sum(len(self.finished(i)) for i in range(len(self.split)))

    def complete(self, index: int) -> bool:
        return len(self.finished(index)) == len(self.expected(index))


# SLURM states of a job that is still to run or running: --resume follows it instead of
# submitting its shard again.
LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")


def live_jobs(launch: Launch, options: Options, todo: list[int]) -> dict:
    """The jobs of an earlier launch still alive for shards in `todo`: SLURM jobs to follow
    again (index -> job). A local job's process still running is refused: this launch cannot
    follow another's processes, and a second job on the same shard would time against it."""
    alive = {}
    for index in todo:
        job_id = launch.jobs.get(str(index))
        if job_id is None:
            continue
        if options.executor == "slurm":
            job = require_submitit().SlurmJob(folder=options.folder / "logs", job_id=job_id)
            if job.state in LIVE:
                alive[index] = job
            continue
        try:
            os.kill(int(job_id), 0)
        except (OSError, ValueError):
            continue
        raise SuiteError(f"shard {index + 1}/{len(launch.split)}'s job of the earlier launch (process {job_id}) "
                         f"is still running; let it finish or stop it, then --resume.")
    return alive


def watch(launch: Launch, options: Options, todo: list[int], progress, sink,
          following: dict | None = None) -> list[str]:
    """Submit the shards in `todo` (the local executor: at most `parallel` at a time), follow
    them with the jobs of an earlier launch still running (`following`), and return a sentence
    per shard that failed, with its job's log. `progress(done, total)` hears the pairs finished
    so far over every shard."""
    executor = make_executor(options)
    count = len(launch.split)
    total = sum(len(launch.expected(i)) for i in range(count))
    available = visible_gpus() if options.executor == "local" else 0
    limit = (options.parallel if options.executor == "local" else None) or len(todo)
    running = dict(following or {})
    waiting, failed = [i for i in todo if i not in running], []
    for index, job in running.items():
        sink.info(f"shard {index + 1}/{count}: following job {job.job_id} of the earlier launch")
    while waiting or running:
        while waiting and len(running) < limit:
            index = waiting.pop(0)
            out = shard_file(launch.folder, index, count)
            job_fn = ShardJob(run_command(launch.plan, index, count, out), out, os.getcwd())
            if options.executor == "local":
                gpus = local_gpus(index, options.gpus_per_job, available)
                executor.update_parameters(visible_gpus=gpus, gpus_per_node=len(gpus))
            try:
                job = executor.submit(job_fn)
            except Exception as error:  # sbatch refused it: a partition, account or limit
                first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
                raise SuiteError(f"submitting shard {index + 1}/{count} failed: {first}. The jobs submitted "
                                 f"before it are in {launch.folder / STATE}; fix the option and pass "
                                 f"--resume.") from None
            running[index] = job
            launch.jobs[str(index)] = job.job_id
            launch.save()
            sink.info(f"shard {index + 1}/{count}: job {job.job_id} submitted")
        progress(launch.finished_pairs(), total)
        for index, job in list(running.items()):
            if not job.done():
                continue
            del running[index]
            error = job.exception()
            if error is not None or not launch.complete(index):
                log = job.paths.stderr if options.executor == "slurm" else job.paths.stdout
                why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}" if error \
                    else "it ended with pairs of its shard unmeasured"
                failed.append(f"shard {index + 1}/{count} (job {job.job_id}, {job.state}): {why}; log: {log}")
        if running or waiting:
            time.sleep(POLL_S)
    progress(launch.finished_pairs(), total)
    return failed


def merge_shards(launch: Launch, out: Path) -> Path:
    from natbench.merge import merge

    count = len(launch.split)
    merge([shard_file(launch.folder, i, count) for i in range(count)], out, force=True)
    return out
