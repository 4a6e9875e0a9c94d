"""Benchmark: every command on random-weight models with the true configs of LLaVA-1.5-7B, Qwen2.5-VL-7B
and InternVL3-8B (``vlmheads.testing.real_configs``, values cited there), each command run as a user runs
it (``python -m heads.X --model DIR``), with seconds, peak memory and the path the ablation sweep took.

    python benchmarks/bench_real_configs.py [--models llava-1.5-7b,...] [--layers 4] [--dtype auto]

On CPU the decoders are cut to ``--layers`` (default 4) at their true width (every layer has the same
shape, so a layer's cost is the full model's per layer), the vision towers are whole, and each command
sees a smoke-sized job: locate as screen + verify on 4 relational questions, intervene with none, AdaptVis
and head-selective AdaptVis on 2 + 2 examples, flow on 8 with one window and no rollout, and flow with
rollout and per-patch knockout (every image token) on 2. On a CUDA machine
(``--device cuda``, a lent GPU) the decoders are whole (``--layers 0``), the weights bfloat16, locate also
runs the exact all-head ablation, and the last column projects 64 examples x 4 functions.

Peak memory is the child process's own maximum resident set (and peak GPU memory on CUDA). The checkpoint
is saved in bfloat16 as the real ones are; ``--dtype`` is passed to every command (default: the command's
own choice: float32 on a CPU without bf16 kernels, the checkpoint's bfloat16 where the CPU has them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# the child: runs one command module in-process and reports its own peak memory as the last line
_CHILD = """
import resource, runpy, sys, json
sys.argv = [sys.argv[1]] + sys.argv[2:]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    code = exit_.code or 0
peak = {"rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
import torch
if torch.cuda.is_available():
    peak["gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
print("BENCH_PEAK " + json.dumps(peak), flush=True)
sys.exit(code)
"""


def run(module: str, argv: list[str], log: Path) -> dict:
    """One command in a child process: seconds, peak memory, exit status, its output kept in ``log``."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, module, *argv], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    peak = next((json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()[::-1]
                 if line.startswith("BENCH_PEAK ")), {})
    return {"seconds": seconds, "rc": proc.returncode, **peak}


def save_model(name: str, layers: int | None, where: Path, small: bool = False) -> dict:
    from vlmheads.testing.real_configs import build_real

    t = time.perf_counter()
    model, processor = build_real(name, text_layers=layers, small=small, dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(where)
    processor.save_pretrained(where)
    del model
    size = sum(f.stat().st_size for f in where.iterdir()) / 2**30
    return {"params": n_params, "gib_on_disk": size, "seconds": time.perf_counter() - t}


def main() -> None:
    from vlmheads.testing.real_configs import REAL_CONFIGS

    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(REAL_CONFIGS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: 4 on CPU, all on CUDA)")
    p.add_argument("--dtype", default=None, help="passed to every command (default: the command's own)")
    p.add_argument("--threads", type=int, default=None, help="passed to every command on CPU")
    p.add_argument("--keep", default=None, help="keep the models and runs in this folder")
    p.add_argument("--small", action="store_true", help="small widths (checks this script, measures nothing)")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    layers = args.layers if args.layers is not None else (0 if cuda else 4)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-real-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--device", args.device] + (["--dtype", args.dtype] if args.dtype else []) \
        + (["--threads", str(args.threads)] if args.threads and not cuda else [])
    flags = sorted(f for f in _cpu_flags() if "bf16" in f or "amx" in f)
    print(f"machine: {args.device}" + (f" ({torch.cuda.get_device_name()})" if cuda else
                                       f", {os.cpu_count()} cores, bf16-relevant flags {flags or 'none'}")
          + f"; decoders at {'full depth' if not layers else f'{layers} layers'}, "
          + ("SMALL width (a check of this script)" if args.small else "true width") + f"; work in {work}")
    rows = []
    for name in args.models.split(","):
        model_dir = work / name
        if not (model_dir / "config.json").exists():
            info = save_model(name, layers or None, model_dir, small=args.small)
            print(f"{name}: {info['params'] / 1e9:.2f} B parameters, {info['gib_on_disk']:.1f} GiB in bf16 "
                  f"(built and saved in {info['seconds']:.0f} s)", flush=True)
        m = ["--model", str(model_dir), *common]
        loc = work / f"{name}-locate"
        jobs = [("locate screen+verify", "heads.locate",
                 [*m, "--dataset", "organism:controlled", "--function", "relational", "--n", "4", "--methods",
                  "ablation", "--screen", "attribution", "--verify", "8", "--random-draws", "1", "--batch-size", "4",
                  "--out", str(loc)], 4)]
        if cuda:
            jobs.append(("locate exact", "heads.locate",
                         [*m, "--dataset", "organism:controlled", "--function", "relational", "--n", "4", "--methods",
                          "ablation", "--screen", "off", "--random-draws", "1", "--batch-size", "4",
                          "--out", str(work / f"{name}-locate-exact")], 4))
        jobs += [("intervene", "heads.intervene",
                  [*m, "--heads-from", str(loc), "--dataset", "organism:controlled", "--method", "none", "--method",
                   "adaptvis", "--method", "head_adaptvis", "--n", "2", "--batch-size", "2",
                   "--out", str(work / f"{name}-intervene")], 4),
                 ("flow --no-rollout", "heads.flow",
                  [*m, "--heads-from", str(loc), "--dataset", "organism:controlled", "--function", "relational",
                   "--n", "8", "--window", str(layers or REAL_CONFIGS[name].heads[0]), "--edges",
                   "image->answer,question->answer", "--no-rollout", "--batch-size", "4",
                   "--out", str(work / f"{name}-flow")], 8),
                 ("flow with rollout", "heads.flow",
                  [*m, "--heads-from", str(loc), "--dataset", "organism:controlled", "--function", "relational",
                   "--n", "2", "--window", str(layers or REAL_CONFIGS[name].heads[0]), "--edges", "image->answer",
                   "--no-probes", "--batch-size", "2", "--out", str(work / f"{name}-flow-rollout")], 2)]
        for label, module, argv, n_examples in jobs:
            out = Path(argv[argv.index("--out") + 1])
            if (out / "metadata.json").exists() and json.loads((out / "metadata.json").read_text())["status"] == \
                    "finished":
                continue  # --keep: a finished job is not run again
            result = run(module, argv, work / f"{out.name}.log")
            result.update(model=name, command=label, n=n_examples, path=_path(out), dtype=_dtype(out))
            rows.append(result)
            print(_line(result, cuda), flush=True)
    (work / "bench_real_configs.json").write_text(json.dumps(rows, indent=1))
    print(f"\nwrote {work / 'bench_real_configs.json'}")


def _line(r: dict, cuda: bool) -> str:
    status = "" if r["rc"] == 0 else f"  FAILED (exit {r['rc']}; see its log)"
    peak = f"peak RSS {r.get('rss_gib', float('nan')):5.1f} GiB" + (f", GPU {r['gpu_gib']:.1f} GiB" if cuda else "")
    projected = f", 64 x 4 functions ~ {r['seconds'] / r['n'] * 256 / 60:.0f} min" if cuda else ""
    return (f"{r['model']:<14} {r['command']:<21} {r['seconds']:7.1f} s ({r['seconds'] / r['n']:6.1f} s/example), "
            f"{peak}, {r['dtype'] or '?'}, sweep path {r['path'] or '-'}{projected}{status}")


def _path(run_dir: Path) -> str | None:
    try:
        summary = json.loads((run_dir / "heads.json").read_text())["summary"]
    except (OSError, ValueError, KeyError):
        return None
    path = summary.get("restart_path")
    return ",".join(sorted(set(path.values()))) if isinstance(path, dict) else path


def _dtype(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "metadata.json").read_text())["model"]["dtype"]
    except (OSError, ValueError, KeyError):
        return None


def _cpu_flags() -> frozenset:
    from vlmheads.machine import cpu_flags

    return cpu_flags()


if __name__ == "__main__":
    main()
