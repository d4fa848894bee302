"""The gate's trials on this machine: repeated A/A gates, a planted 1.5x slowdown and a planted 2x
memory increase in the test-only backend `test-planted`, each against one baseline recorded from
unchanged code. Every natbench command runs in a fresh process, as in CI. Prints how many gate
runs failed and which rows regressed. A trial harness, not a test: it takes minutes and its
figures go to docs/reproducibility.md.

    python -m benchmarks.gate_trials --runs 20 [--suite smoke] [--backends test-planted] [-- gate options]
    python -m benchmarks.gate_trials natbench ARGS...   # natbench with the test backends registered
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from natbench import backends
from tests import fakes

BACKENDS = "natten,torch,swin,sdpa,test-planted"  # --backends test-planted: the backend alone
CONDITIONS = (("A/A", 1.0, 1.0), ("slowdown 1.5x", 1.5, 1.0), ("memory 2x", 1.0, 2.0))


def natbench(*args, planted=(1.0, 1.0)) -> tuple[int, str]:
    """Runs natbench, with the test backends registered, in a child process."""
    env = {**os.environ, "TEST_PLANTED": ",".join(map(str, planted))}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gate_trials", "natbench", *map(str, args)],
                          capture_output=True, text=True, env=env)
    return done.returncode, done.stdout


def main() -> None:
    if sys.argv[1:2] == ["natbench"]:
        from natbench.cli import main as natbench_main

        backends._REGISTRY.update(fakes.REGISTRY)
        sys.argv = sys.argv[1:]
        natbench_main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--backends", default=BACKENDS, help="the gated backends, test-planted among them")
    parser.add_argument("--only", choices=[name for name, _, _ in CONDITIONS], help="one condition")
    parser.add_argument("gate_options", nargs="*")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        baseline = Path(directory) / "baseline.jsonl"
        code, _ = natbench("baseline", "update", "--suite", arguments.suite, "--backend", arguments.backends,
                           "--device", "cpu", "--out", baseline, "--quiet")
        if code:
            raise SystemExit(f"baseline update failed with exit code {code}")
        for name, slowdown, memory in CONDITIONS:
            if arguments.only and name != arguments.only:
                continue
            failed, first_failed, rows, unconfirmed = 0, 0, Counter(), Counter()
            for run in range(arguments.runs):
                code, out = natbench("gate", "--baseline", baseline, "--suite", arguments.suite,
                                     "--backend", arguments.backends, "--device", "cpu", "--json",
                                     "--out", Path(directory) / f"{name[:3]}-{run}.jsonl",
                                     *arguments.gate_options, planted=(slowdown, memory))
                result = json.loads(out)
                failed += code == 1
                first_failed += bool(result["regressions"] or result.get("unconfirmed"))
                for finding in result["findings"]:
                    if finding["outcome"] in ("regression", "unconfirmed"):
                        counts = rows if finding["outcome"] == "regression" else unconfirmed
                        counts[f"{finding['backend']} {finding['metric']} {finding['case_key'].split('-')[5]} {finding['case_key'].split('-')[-1]}"] += 1
            print(f"{name}: {failed} of {arguments.runs} gate runs failed ({first_failed} on their "
                  f"first run alone, before --confirm); regressed rows: "
                  f"{dict(rows) or 'none'}; unconfirmed when measured again: "
                  f"{dict(unconfirmed) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
