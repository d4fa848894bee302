"""What natbench launch asks of SLURM and of each job, without a cluster."""

from pathlib import Path

import pytest

from natbench.errors import SuiteError
from natbench.launch import Options, local_gpus, parse_slurm_args, run_command, sbatch_text, slurm_parameters

PLAN = {"suite": "resolutions", "backend": "natten,swin", "device": "cuda", "dtype": "float16", "pass_": None,
        "set_": ["batch=2", "kernel_size=7,13"], "max_time": 2.0, "rounds": None, "threads": None,
        "backend_module": ["my_kernels.py"], "call_timeout": None, "costs": "old.jsonl"}


def test_a_job_runs_its_shard_with_every_option_of_the_plan():
    command = run_command(PLAN, 2, 8, Path("out/shard-3-of-8.jsonl"))
    text = " ".join(command[1:])
    assert text.startswith("-m natbench run --suite resolutions --shard 3/8 --out out/shard-3-of-8.jsonl")
    for part in ("--backend natten,swin", "--device cuda", "--dtype float16", "--max-time 2.0",
                 "--set batch=2 --set kernel_size=7,13", "--backend-module my_kernels.py", "--costs old.jsonl"):
        assert part in text
    assert "--pass" not in text and "--rounds" not in text  # left at the suite's


def test_slurm_options_become_sbatch_lines():
    pytest.importorskip("submitit")
    options = Options("slurm", 8, Path("sweep"), partition="gpu", gpus_per_job=2, time_min=90, cpus_per_job=8,
                      slurm_args=parse_slurm_args(["account=proj", "constraint=h100"]))
    params = slurm_parameters(options)
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 2 and params["time"] == 90
    script = sbatch_text(options, ["python", "-m", "natbench", "run"])
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --account=proj", "#SBATCH --constraint=h100",
                 "#SBATCH --nodes=1", "#SBATCH --signal=USR2@90"):
        assert line in script


@pytest.mark.parametrize("value", ["account", "=x", ""])
def test_a_slurm_arg_without_key_and_value_says_the_form(value):
    with pytest.raises(SuiteError, match="KEY=VALUE"):
        parse_slurm_args([value])


def test_local_jobs_take_their_own_gpus_round_robin():
    assert [local_gpus(i, 1, 4) for i in range(5)] == [[0], [1], [2], [3], [0]]
    assert [local_gpus(i, 2, 4) for i in range(3)] == [[0, 1], [2, 3], [0, 1]]
    assert local_gpus(3, 1, 0) == [] and local_gpus(0, 0, 4) == []
