"""Benchmark: the same locate run as one process and as N data-parallel processes (torchrun), side by side.

    python benchmarks/bench_parallel.py [--processes 2] [--threads 1] [--n 32] [--batch-size 8] [--repeats 2]
        [--methods ablation,patching,attribution,probe,attention] [--device cpu] [--model organism]

Each repeat runs both commands, alternating which goes first (a shared machine drifts), each into a fresh
run directory; the figures are wall seconds of the whole command (start-up and model load included) and
the paired ratio one / N per repeat. Every run's scores.csv, heads.json and samples.jsonl are compared
with the first one-process run's: the line ``identical outputs: True`` is the check that data parallelism
changed nothing. On CPU give every process the same --threads (the cores are shared: 2 processes of 1
thread against 1 process of 2 is the fair comparison on a 2-core machine, ``--threads`` sets the one
process's and ``--threads-each`` the parallel ones'); on GPUs pass ``--device cuda`` (every process takes
its own GPU).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUTPUTS = ("scores.csv", "heads.json", "samples.jsonl")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="the one process's threads (default: --processes)")
    p.add_argument("--threads-each", type=int, default=1, help="each parallel process's threads (default 1)")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--methods", default="ablation,patching,attribution,probe,attention")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="organism")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    common = ["--function", "spatial", "--model", args.model, "--device", args.device, "--n", str(args.n),
              "--batch-size", str(args.batch_size), "--methods", args.methods]
    one_threads = args.threads or args.processes
    with tempfile.TemporaryDirectory() as tmp:
        def one(out: Path) -> list[str]:
            return [sys.executable, "-m", "heads.locate", *common, "--threads", str(one_threads), "--out", str(out)]

        def many(out: Path) -> list[str]:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(args.processes), "-m", "heads.locate", "--", *common, "--threads", str(args.threads_each),
                    "--out", str(out)]

        times: dict[str, list[float]] = {"one": [], "many": []}
        reference, identical = None, True
        for r in range(args.repeats):
            order = [("one", one), ("many", many)] if r % 2 == 0 else [("many", many), ("one", one)]
            for name, command in order:
                out = Path(tmp) / f"{name}-{r}"
                t = time.perf_counter()
                done = subprocess.run(command(out), capture_output=True, text=True)
                times[name].append(time.perf_counter() - t)
                if done.returncode != 0:
                    sys.exit(f"{name} run {r} failed ({done.returncode}):\n{done.stderr[-2000:]}")
                files = {f: (out / f).read_bytes() for f in OUTPUTS}
                if reference is None:
                    reference = files
                identical &= files == reference
        ratios = [a / b for a, b in zip(times["one"], times["many"])]
        print(f"locate on {args.model} ({args.device}): n {args.n} per function, batch {args.batch_size}, "
              f"methods {args.methods}")
        print(f"1 process x {one_threads} threads : " + ", ".join(f"{t:.1f}" for t in times["one"]) + " s")
        print(f"{args.processes} processes x {args.threads_each} threads: "
              + ", ".join(f"{t:.1f}" for t in times["many"]) + " s")
        print(f"speed-up (1 process / {args.processes}), paired per repeat: "
              + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
        print(f"identical outputs: {identical}")


if __name__ == "__main__":
    main()
