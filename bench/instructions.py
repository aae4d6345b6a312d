"""W1 in CPU instructions per event: the speed figure that a noisy machine does not move.

Wall-clock time on a shared 2-core machine moves by 30% from run to run; the number of
instructions a run executes moves by well under 1%. This runs W1 (``range(N) -> x + 1 ->
sum``) under valgrind (cachegrind, no cache simulation) at two sizes and reports
``(instructions(big) - instructions(small)) / (big - small)``: the cost of one more event,
start-up and imports cancelled out, at several ``max_demand`` and for the plain loop.

The hot path alone is measured: the metrics sampler, the slow-handler watchdog and the
stall watch are off, and so are the two decisions the runtime takes by elapsed time (the
5 ms time slice, ``timing.SLICE``, and the fused loop's "time every round once rounds are
costly", ``pump.COSTLY``): under valgrind a run is ~50x slower, so they would fire where
they never do in real time, and by how long the run took. Fewer instructions is not always
less time (cache misses, allocation): confirm a large change with ``bench/throughput.py``.

    python bench/instructions.py            # the table, beside the recorded figures
    python bench/instructions.py --check    # exit 1 if a figure grew more than 3%
    python bench/instructions.py --record   # write the figures to bench/instructions.json
    python bench/instructions.py --tree DIR # another checkout's figures (a git worktree)
    python bench/instructions.py --checkpoints  # and W1 with checkpoint= beside it

Needs valgrind (Debian: ``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(HERE, "instructions.json")
TOLERANCE = 0.03

WORKLOAD = """
import gc
import sys

n, md = int(sys.argv[1]), int(sys.argv[2])
if md == 0:  # the limit: a plain loop in a function (locals, as a hook's would be)

    def plain(n):
        total = 0
        for x in range(n):
            total += x + 1
        return total

    assert plain(n) == n * (n + 1) // 2
else:
    import genstage_nb as gs
    from genstage_nb.core import concurrent, jobs, mailbox, pump

    for module in (concurrent, jobs, mailbox, pump):  # decisions by elapsed time: off
        if hasattr(module, "SLICE"):
            module.SLICE = float("inf")
    pump.COSTLY = float("inf")
    gc.freeze()  # what start-up allocated is out of the collector's way (see measure())

    class Sum(gs.Consumer):
        def init(self):
            self.total = 0

        def handle_events(self, events):
            self.total += sum(events)

    durable = {}
    if len(sys.argv) > 3:  # --checkpoints: the same run with a checkpoint every 5 s
        durable = {"checkpoint": sys.argv[3], "checkpoint_every": 5.0, "checkpoint_mode": "fresh"}
    p = gs.Pipeline(metrics_interval=None, slow_handler=None, stall_after=None, **durable)
    src = p.add(gs.from_iterable(range(n)), name="numbers")
    inc = p.add(gs.producer_consumer(lambda events: [x + 1 for x in events]), name="inc")
    out = p.add(Sum(), name="sum")
    p.link(src, inc, max_demand=md)
    p.link(inc, out, max_demand=md)
    p.run_sync()
    assert out.total == n * (n + 1) // 2
"""

#: max_demand (0: the plain loop) -> (small, big) event counts.
SIZES = {0: (1_000, 101_000), 1: (1_000, 11_000), 10: (1_000, 21_000), 1000: (1_000, 101_000)}


def instructions(cmd: list[str], env: dict) -> int:
    with tempfile.NamedTemporaryFile(suffix=".out") as out:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out.name}",
                *cmd,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
    if proc.returncode != 0:
        sys.exit(f"the workload failed under valgrind:\n{proc.stderr[-2000:]}")
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if found is None:
        sys.exit(f"no instruction count in valgrind's output:\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def measure(python: str, tree: str | None = None, durable: bool = False) -> dict[str, float]:
    """Instructions per event of W1 for every max_demand in SIZES (key "0": the loop),
    with this checkout's package or ``tree``'s (``durable``: with checkpoints on)."""
    # The same dict layouts every run; no helper threads (valgrind counts every thread's
    # instructions, and a thread pool's spinning grows with the run's time). The workload
    # freezes what start-up allocated: else the collector's full passes walk every object
    # that imports left, and an environment with more of them (a CI run, a notebook with
    # pandas loaded) counted up to 3% more per event at max_demand 10.
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.path.abspath(tree) if tree else os.path.dirname(HERE)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "w1.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        extra = [os.path.join(tmp, "run.db")] if durable else []
        for md, (small, big) in SIZES.items():
            if durable and md == 0:
                continue  # (the loop has no checkpoints)
            cmd = lambda n, md=md: [python, script, str(n), str(md), *extra]  # noqa: E731
            run = lambda n, cmd=cmd: instructions(cmd(n), env)  # noqa: E731
            figures[str(md)] = (run(big) - run(small)) / (big - small)
    return figures


def table(figures: dict[str, float], recorded: dict[str, float] | None) -> str:
    lines = [
        "W1 range(N) -> x + 1 -> sum: instructions per event (valgrind, start-up cancelled)",
        f"{'workload':16s}{'now':>10s}{'recorded':>10s}{'change':>9s}{'x plain':>9s}",
    ]
    for key, value in figures.items():
        name = "plain loop" if key == "0" else f"max_demand {key}"
        before = (recorded or {}).get(key)
        change = f"{value / before - 1:+8.1%}" if before else f"{'':>8s}"
        old = f"{before:10,.0f}" if before else f"{'-':>10s}"
        lines.append(f"{name:16s}{value:10,.0f}{old}{change:>9s}{value / figures['0']:9.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--check", action="store_true", help="fail on growth past 3%%")
    parser.add_argument("--record", action="store_true", help="write bench/instructions.json")
    parser.add_argument("--tree", help="measure another checkout of the project instead")
    parser.add_argument(
        "--checkpoints", action="store_true", help="also W1 with a checkpoint every 5 s"
    )
    args = parser.parse_args()
    if args.tree and (args.record or args.check):
        sys.exit("--tree measures another checkout: it neither records nor checks")
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    recorded = None
    if os.path.exists(RECORD):
        with open(RECORD) as f:
            recorded = json.load(f)["w1"]
    figures = measure(args.python, args.tree)
    print(table(figures, recorded))
    if args.checkpoints:
        durable = measure(args.python, args.tree, durable=True)
        print("\nwith checkpoint= (every 5 s) beside the same run without")
        for key, value in durable.items():
            ratio = value / figures[key]
            print(f"max_demand {key:6s}{value:10,.0f}{figures[key]:10,.0f}{ratio:9.3f}x")
    if args.record:
        with open(RECORD, "w") as f:
            json.dump(
                {
                    "w1": {key: round(value) for key, value in figures.items()},
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                },
                f,
                indent=2,
            )
            f.write("\n")
        print(f"recorded in {os.path.relpath(RECORD)}")
    if args.check:
        if recorded is None:
            sys.exit(f"nothing recorded to check against: run with --record ({RECORD})")
        grown = [
            f"max_demand {key}: {value:,.0f} instructions per event, recorded "
            f"{recorded[key]:,.0f} (+{value / recorded[key] - 1:.1%})"
            for key, value in figures.items()
            if key != "0" and key in recorded and value > recorded[key] * (1 + TOLERANCE)
        ]
        if grown:
            print("grew more than 3% over bench/instructions.json:\n  " + "\n  ".join(grown))
            return 1
        print("within 3% of bench/instructions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
