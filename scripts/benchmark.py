"""Benchmark trainkit's training settings against plain TRL: tokens/s, padding, step time, memory, MFU.

    python scripts/benchmark.py                      # both runs; CPU: configs/bench_cpu.yaml, CUDA: H100 config
    python scripts/benchmark.py --steps 30 --skip 5  # fewer steps
    python scripts/benchmark.py --runs trainkit      # one run only

Prints a side-by-side table and writes one JSON per run under outputs/bench/. Exit 0 when every
run finished, 1 for a bad argument or config, 70 when a run crashed (its log is named).
The logic is in trainkit/bench.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.bench import main  # noqa: E402

if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
