"""Suite files: expansion, overrides and every kind of malformed input."""

import pytest

from natbench import suite as suites
from natbench.errors import SuiteError


@pytest.mark.parametrize("name", suites.suite_names())
def test_shipped_suites_load_and_expand(name):
    loaded = suites.load(name)
    assert loaded.expand() and loaded.backends and loaded.description


def test_required_suites_exist_with_their_sweeps():
    assert {"smoke", "kernel-sizes", "resolutions", "dtypes", "dilation", "swin-match",
            "nat-layers"} <= set(suites.suite_names())
    kernels = [p.case.kernel_size[0] for p in suites.load("kernel-sizes").expand()]
    assert kernels == list(range(3, 32, 2))
    layers = suites.load("nat-layers").expand()
    assert [(p.case.resolution[0], p.case.heads) for p in layers[4:8]] == \
        [(56, 3), (28, 6), (14, 12), (7, 24)]
    assert {p.case.head_dim for p in layers} == {32} and layers[4].label == "Small s1"


def _write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_sweep_is_cartesian_and_zip_advances_together(tmp_path):
    path = _write(tmp_path, """
backends = ["torch"]
[case]
heads = 2
[sweep]
kernel_size = [3, 5]
dtype = ["float32", "bfloat16"]
[[zip]]
resolution = [16, 32, 64]
batch = [4, 2, 1]
""")
    points = suites.load(str(path)).expand()
    assert len(points) == 2 * 2 * 3
    assert {(p.case.resolution[0], p.case.batch) for p in points} == {(16, 4), (32, 2), (64, 1)}


def test_set_overrides_one_value_or_sweeps_several():
    loaded = suites.load("kernel-sizes")
    points = loaded.with_overrides(dict([suites.parse_set("kernel_size=3,5"),
                                         suites.parse_set("resolution=32x48")])).expand()
    assert [(p.case.kernel_size, p.case.resolution) for p in points] == \
        [((3, 3), (32, 48)), ((5, 5), (32, 48))]
    zipped = suites.load("nat-layers").with_overrides({"heads": [1]}).expand()
    assert len(zipped) == 12 and {p.case.heads for p in zipped} == {1}


@pytest.mark.parametrize("text,message", [
    ("[case]\nkernal_size = 3\n", r"s.toml:2: key 'kernal_size': unknown key \(did you mean 'kernel_size'\?\)"),
    ("backend = ['torch']\n[case]\n", r"s.toml:1: key 'backend': unknown key \(did you mean 'backends'\?\)"),
    ("[case]\nrank = \n", r"not valid TOML: .*line 2"),
    ("backends = ['trch']\n[case]\n", r"unknown backend 'trch' \(did you mean 'torch'\?\)"),
    ("backends = ['torch', 'swin']\nbaseline = 'sdpa'\n[case]\n",
     r"s.toml:2: key 'baseline': baseline must be one of the suite's backends \(torch, swin\), got 'sdpa'"),
    ("[case]\n[[zip]]\nresolution = [8, 16]\nheads = [1]\n", r"same length"),
    ("[case]\n[sweep]\nkernel_size = 3\n", r"s.toml:3: key 'kernel_size': sweep.kernel_size must be a non-empty list"),
    ("[case]\ndtype = 'float8'\n", r"unknown dtype 'float8'"),
    ("[case]\n[timing]\nmax_time = 1\n", r"did you mean 'max_time_s'"),
    ("description = 'x'\n", r"no \[case\] table"),
    ("[case]\n[sweeps]\nkernel_size = [3]\n", r"s.toml:2: key 'sweeps': unknown key \(did you mean 'sweep'\?\)"),
    ("[case]\n[timing.backends.natten-lbi]\nrounds = 1\n",
     r"s.toml:2: key 'natten-lbi': unknown key \(did you mean 'natten-lib'\?\)"),
    ("[case]\n[timing.backends.torch]\nmax_time = 2\n",
     r"s.toml:3: key 'max_time': unknown key \(did you mean 'max_time_s'\?\)"),
    ("[case]\n[timing.backends.torch]\nthreads = 2\n", r"key 'threads': unknown key"),
    ("[case]\n[timing]\nrounds = 2\n[timing.backends.torch]\nrounds = 3\n",
     r"backends.torch.rounds 3 is over the run's 2 rounds"),
    ("[case]\n[timing.cdua]\nrounds = 2\n", r"s.toml:2: key 'cdua': unknown key \(did you mean 'cuda'\?\)"),
    ("[case]\n[timing]\nrounds = 2\n[timing.gpu.backends.torch]\nrounds = 1\n",
     r"s.toml:4: key 'gpu': unknown key \(did you mean 'cpu'\?\)"),
    ("[case]\n[timing.cuda]\nmax_time = 1\n",
     r"s.toml:3: key 'max_time': unknown key \(did you mean 'max_time_s'\?\)"),
    ("[case]\n[timing.cpu.backends.natten-lbi]\nrounds = 1\n", r"s.toml:2: .*did you mean 'natten-lib'"),
    ("[case]\n[timing.cuda]\nrounds = 2\n[timing.cuda.backends.torch]\nrounds = 3\n",
     r"\[timing.cuda\] or its option: backends.torch.rounds 3 is over the run's 2 rounds"),
])
def test_malformed_suites_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(SuiteError, match=message):
        suites.load(str(_write(tmp_path, text)))


def test_unknown_suite_and_bad_set_options_are_explained():
    with pytest.raises(SuiteError, match="did you mean 'smoke'"):
        suites.load("smoek")
    with pytest.raises(SuiteError, match="did you mean 'kernel_size'"):
        suites.parse_set("kernel=3")
    with pytest.raises(SuiteError, match="expected AXIS=VALUE"):
        suites.parse_set("kernel_size")
    assert suites.parse_set("is_causal=truexfalse") == ("is_causal", [[True, False]])


TIMED = """
[case]
[timing]
max_time_s = 1.0
[timing.backends.natten-lib]
max_time_s = 2.5
rounds = 1
[timing.cpu]
max_time_s = 0.5
[timing.cpu.backends.natten-lib]
rounds = 3
max_samples = 1
"""


def test_a_backend_timing_table_changes_that_backend_only_and_the_command_line_beats_it(tmp_path):
    loaded = suites.load(str(_write(tmp_path, TIMED)))
    policy = loaded.policy()
    slow, torch_ = policy.for_backend("natten-lib"), policy.for_backend("torch")
    assert (slow.max_time_s, slow.rounds, slow.min_samples) == (2.5, 1, policy.min_samples)
    assert (torch_.max_time_s, torch_.rounds) == (policy.max_time_s, policy.rounds) == (1.0, 8)
    # --max-time holds for every backend; the table keeps what the command line did not set
    given = loaded.policy(max_time_s=0.5).for_backend("natten-lib")
    assert (given.max_time_s, given.rounds) == (0.5, 1)
    assert loaded.policy(max_time_s=0.5, rounds=1).backends == {}


def test_a_device_table_holds_on_its_device_only_over_timing_and_under_the_command_line(tmp_path):
    loaded = suites.load(str(_write(tmp_path, TIMED)))
    cpu, cuda = loaded.policy("cpu"), loaded.policy("cuda")
    assert cpu.max_time_s == 0.5 and cuda.max_time_s == 1.0 == loaded.policy().max_time_s
    # a device's backend table merges into [timing.backends.NAME] field by field
    assert cpu.backends == {"natten-lib": {"max_time_s": 2.5, "rounds": 3, "max_samples": 1}}
    assert cuda.backends == {"natten-lib": {"max_time_s": 2.5, "rounds": 1}}
    given = loaded.policy("cpu", rounds=2, max_time_s=3.0)
    assert (given.max_time_s, given.rounds, given.backends) == (3.0, 2, {"natten-lib": {"max_samples": 1}})


def test_kernel_sizes_holds_natten_lib_to_one_call_a_round_on_the_cpu_only():
    # NATTEN's CPU path takes ~1 s a call; its CUDA kernels well under a millisecond
    loaded = suites.load("kernel-sizes")
    cpu, cuda = (loaded.policy(d).for_backend("natten-lib") for d in ("cpu", "cuda"))
    assert (cpu.rounds, cpu.max_samples) == (3, 1)
    assert (cuda.rounds, cuda.max_samples, cuda.max_time_s) == (8, 2000, 1.0)
