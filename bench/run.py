"""Every benchmark, one after the other: W1 throughput (with peers and the max_demand
curve), W2 bounded memory, W3 fan-out, W3 scale-out on executors, W4 I/O-bound calls and
the autotuner, the dashboard's cost, W5 and W1 as Flows, and what checkpoints cost. (W1 in instructions per event,
under valgrind: ``bench/instructions.py``.)

    python bench/run.py [--quick]

``--quick`` runs each over fewer events and repeats (a smoke run, not figures to quote).
Each prints its own table; all ratios are against baselines measured in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

FULL = [
    ["throughput.py"],
    ["memory.py"],
    ["fanout.py"],
    ["executors.py", "--repeat", "5"],
    ["io_bound.py", "--repeat", "5"],
    ["autotune.py"],
    ["dashboard.py"],
    ["flow.py"],
    ["checkpoints.py"],
]
QUICK = [
    ["throughput.py", "--events", "200000", "--repeat", "1", "--peer-events", "20000"],
    ["memory.py", "--sizes", "10000", "100000"],
    ["fanout.py", "--events", "200000", "--repeat", "1"],
    ["executors.py", "--events", "2000", "--repeat", "1", "--no-dask"],
    ["io_bound.py", "--calls", "500", "--repeat", "1", "--http-calls", "200"],
    ["autotune.py", "--quick"],
    ["dashboard.py", "--seconds", "3", "--repeat", "1"],
    ["flow.py", "--repeat", "1", "--events", "200000", "--no-bytewax"],
    ["checkpoints.py", "--repeat", "1", "--events", "200000", "--flights", "50000"],
]


def main() -> int:
    runs = QUICK if "--quick" in sys.argv[1:] else FULL
    for script, *args in runs:
        print(f"\n=== bench/{script} {' '.join(args)}".rstrip(), flush=True)
        status = subprocess.call([sys.executable, os.path.join(HERE, script), *args])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
