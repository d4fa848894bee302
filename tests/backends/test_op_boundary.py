"""The op boundary (csrc/include/na_checks.h): every op of torch.ops.natbench checks its inputs
itself, on the CPU and in the CUDA host code alike."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from natbench.extension import SANITIZE
from natbench.paths import CSRC, PACKAGE_ROOT
from tests.backends import malformed

ROOT = PACKAGE_ROOT.parent
OP_NAMES = sorted(set(re.findall(r'm\.impl\("(\w+)"', (CSRC / "bindings.cpp").read_text())))


@pytest.fixture(scope="module")
def ops():
    from natbench.backends.natten import _ops

    return _ops()


def test_malformed_inputs_to_every_op_are_refused_without_a_crash(tmp_path):
    """The property test in a child process: a crash (or a sanitizer's abort) is a failed test,
    not the end of the run. Every op meets every kind of malformed input that applies to it."""
    tally_file = tmp_path / "tally.json"
    child = subprocess.run([sys.executable, "-m", "tests.backends.malformed", "--examples", "12",
                            "--json", str(tally_file)], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    assert child.returncode == 0, (f"exit {child.returncode} (negative: killed by that signal)\n"
                                   f"{child.stdout[-4000:]}\n{child.stderr[-4000:]}")
    calls = json.loads(tally_file.read_text())["calls"]
    assert sorted(malformed.OPS) == OP_NAMES
    for op, arguments in malformed.OPS.items():
        for label, (argument, _) in malformed.MUTATIONS.items():
            if argument in arguments:
                assert calls.get(f"{op}: {label}", 0) >= 1, f"{op} never met '{label}'"
        assert calls[f"{op}: valid, other strides"] >= 1


def _qkv(*spatial, heads=2, dim=4, batch=1, dtype=torch.float32):
    return [torch.randn(batch, *spatial, heads, dim, dtype=dtype) for _ in range(3)]


GEOMETRY_7 = ([7, 7], [1, 1], [1, 1], [False, False])


@pytest.mark.parametrize("rpb_shape,message", [
    ((2, 2, 2), r"rpb must have shape \[2, 13, 13\], got \[2, 2, 2\]"),
    ((2, 12, 13), r"rpb must have shape \[2, 13, 13\], got \[2, 12, 13\]"),
    ((1, 13, 13), r"rpb must have shape \[2, 13, 13\], got \[1, 13, 13\]"),
])
def test_a_bias_table_of_the_wrong_shape_or_heads_is_refused_by_every_op_that_takes_one(ops, rpb_shape, message):
    q, k, v = _qkv(9, 9)
    rpb = torch.zeros(rpb_shape)
    with pytest.raises(RuntimeError, match="na_fused_forward: " + message):
        ops.na_fused_forward(q, k, v, rpb, *GEOMETRY_7, 1.0)
    with pytest.raises(RuntimeError, match="na_qk_rpb: " + message):
        ops.na_qk_rpb(q, k, rpb, *GEOMETRY_7, 1.0)
    out, lse = ops.na_fused_forward(q, k, v, None, *GEOMETRY_7, 1.0)
    with pytest.raises(RuntimeError, match="na_fused_backward: " + message):
        ops.na_fused_backward(q, k, v, rpb, out, lse, out, *GEOMETRY_7, 1.0)


def test_a_kernel_longer_than_its_axis_with_dilation_is_refused_naming_the_axis(ops):
    q, k, v = _qkv(9, 12)
    with pytest.raises(RuntimeError, match=r"na_qk_rpb: axis 1: kernel_size 7 x dilation 2 > length 12"):
        ops.na_qk_rpb(q, k, None, [3, 7], [1, 2], [1, 1], [False, False], 1.0)
    attn = torch.zeros(1, 2, 108, 21)
    with pytest.raises(RuntimeError, match=r"na_av: axis 1: kernel_size 7 x dilation 2 > length 12"):
        ops.na_av(attn, v, [3, 7], [1, 2], [1, 1], [False, False])


@pytest.mark.parametrize("which,change,message", [
    ("k", lambda t: t[:, :, :, :1], r"k must have shape \[1, 9, 9, 2, 4\], got \[1, 9, 9, 1, 4\]"),
    ("v", lambda t: torch.cat([t, t]), r"v must have shape \[1, 9, 9, 2, 4\], got \[2, 9, 9, 2, 4\]"),
    ("k", lambda t: t[:, :8], r"k must have shape \[1, 9, 9, 2, 4\], got \[1, 8, 9, 2, 4\]"),
    ("v", lambda t: t.half(), r"v must be Float, got Half"),
])
def test_q_k_v_of_mismatched_batch_heads_lengths_or_dtype_are_refused(ops, which, change, message):
    tensors = dict(zip("qkv", _qkv(9, 9)))
    tensors[which] = change(tensors[which])
    with pytest.raises(RuntimeError, match="na_fused_forward: " + message):
        ops.na_fused_forward(tensors["q"], tensors["k"], tensors["v"], None, [3, 3], [1, 1], [1, 1],
                             [False, False], 1.0)


def test_geometry_lists_of_the_wrong_length_are_refused(ops):
    q, k, v = _qkv(9, 9)
    with pytest.raises(RuntimeError, match=r"need 2 entries each \(one per spatial axis\), got 2, 3, 2 and 2"):
        ops.na_fused_forward(q, k, v, None, [3, 3], [1, 1, 1], [1, 1], [False, False], 1.0)


def test_an_attention_matrix_of_another_batch_or_heads_is_refused(ops):
    """attn's batch and heads index v: a smaller v than attn says would be read past its end."""
    v = torch.randn(1, 9, 9, 2, 4)
    attn = torch.softmax(torch.randn(2, 2, 81, 9), -1)
    with pytest.raises(RuntimeError, match=r"na_av: attn must have shape \[1, 2, 81, 9\], got \[2, 2, 81, 9\]"):
        ops.na_av(attn, v, [3, 3], [1, 1], [1, 1], [False, False])


def test_mixed_devices_reaching_the_shape_functions_are_refused(ops):
    """A CPU tensor beside a meta one dispatches to the ops' fake (shape) functions, which would
    otherwise return uninitialised memory as a result."""
    q, k, v = _qkv(9, 9)
    with pytest.raises(RuntimeError, match="na_fused_forward: every input must be on one device"):
        ops.na_fused_forward(q, k.to("meta"), v, None, [3, 3], [1, 1], [1, 1], [False, False], 1.0)


HOST_FILES = {"cpu": (("cpu/na_cpu.cpp", "cpu/na_cpu_fused_backward.cpp"), "checks::kCpu"),
              "cuda": (("cuda/na_cuda.cpp",), "kCuda")}


@pytest.mark.parametrize("device", HOST_FILES)
def test_every_host_function_checks_its_op_before_anything_else(device):
    """The CUDA host code cannot run here: it shares the checks with the CPU's, and each host
    function's first statement is its op's check (`make cuda-check` compiles it)."""
    paths, target = HOST_FILES[device]
    found = []
    for path in paths:
        source = (CSRC / path).read_text()
        found += re.findall(r"\b(\w+)_" + device + r"\([^)]*\)\s*\{\n\s*([^;]*;)", source)
    for name, first in found:
        assert first.startswith(f"checks::{name}({target},"), f"{device}: {name} begins with {first!r}"
    assert sorted(name for name, _ in found) == sorted(op.removeprefix("na_") for op in OP_NAMES)


sanitized = pytest.mark.skipif(not os.environ.get(SANITIZE), reason=f"only under `make sanitize` ({SANITIZE} set)")


@sanitized
def test_the_sanitized_run_loads_the_sanitized_build():
    from natbench.extension import build

    result = build()
    assert result.ok and f"-fsanitize={os.environ[SANITIZE]}" in result.cflags


@sanitized
def test_the_sanitizer_catches_a_planted_read_past_a_tensor():
    """The runtime is live in child processes too: a read one element past a tensor's buffer
    (a memcpy that AddressSanitizer intercepts) aborts the child with its report."""
    code = ("import ctypes, torch; t = torch.zeros(16); "
            "ctypes.string_at(t.data_ptr(), t.nbytes + t.element_size())")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode != 0 and "heap-buffer-overflow" in child.stderr, child.stderr[-2000:]
