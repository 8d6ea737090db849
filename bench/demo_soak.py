"""Run ``make demo``'s program N times and count how each run ended; exits 1 unless every run exited 0.

    .venv/bin/python bench/demo_soak.py [--runs 10]

The first run starts the dev environment (``canaryctl dev up``) if none is running; the others
reuse it. Before ``starter.lifecycle``, about one run in five finished the whole demo and then
aborted at interpreter shutdown (exit 134, "Fatal Python error: PyGILState_Release").
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    statuses: collections.Counter[int] = collections.Counter()
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "starter.demo"], cwd=ROOT, capture_output=True, text=True)
        fatal = "Fatal Python error" in result.stderr
        statuses[result.returncode] += 1
        print(f"run {run:>2}: exit {result.returncode}{' (fatal error at shutdown)' if fatal else ''} "
              f"in {time.monotonic() - started:.1f} s", flush=True)
        if result.returncode != 0:
            print("    " + "\n    ".join(result.stderr.strip().splitlines()[-5:]), flush=True)
    summary = ", ".join(f"exit {status}: {count}" for status, count in sorted(statuses.items()))
    print(f"{args.runs} runs: {summary}")
    return 0 if set(statuses) == {0} else 1


if __name__ == "__main__":
    sys.exit(main())
