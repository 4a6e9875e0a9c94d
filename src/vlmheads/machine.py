"""What this machine's CPU can do, read once: which half-precision kernels are fast, and how many torch
threads a process should use.

Two facts measured on the machines this project runs on decide the defaults:

* bf16 on a CPU without bf16 instructions (AVX2 only) ran a decoder-shaped GEMM 6x slower than
  float32; on one with AVX512-BF16/AMX it ran 5.8x faster. So a CPU run keeps a checkpoint's bf16 (or
  fp16) only where the CPU has the instructions for it, and otherwise computes in float32 and says so.
* On a busy 2-core machine one process with torch's default 2 threads took 4x longer than with 1
  (64 examples: 476-588 s vs 113-147 s): threads that wait on a core somebody else holds stall every
  parallel op. So the default is the cores free when the command starts, and the choice is recorded.

    from vlmheads.machine import choose_threads, fast_half_on_cpu
    choose_threads(None)            # {"threads": 1, "chosen_by": "free cores: 2 usable, load 1.3"}
    fast_half_on_cpu(torch.bfloat16)
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Iterable

import torch
from . import parallel
from .errors import InputError

# instructions that give torch fast CPU kernels for a half type (x86 /proc/cpuinfo "flags", arm "Features")
_FAST_HALF_FLAGS = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16", "bf16"),
    torch.float16: ("avx512_fp16", "amx_fp16", "fphp", "asimdhp"),
}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux: /proc/cpuinfo; elsewhere none are known, so none are fast)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def fast_half_on_cpu(dtype: torch.dtype, flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU (or ``flags``) has the instructions that make ``dtype`` matrix products fast.
    Apple silicon has them (macOS gives no cpuinfo; arm64 there is taken as fast)."""
    wanted = _FAST_HALF_FLAGS.get(dtype)
    if wanted is None:
        return True  # float32 / float64: the CPU's own types
    if flags is None and platform.system() == "Darwin" and platform.machine() == "arm64":
        return True
    have = cpu_flags() if flags is None else set(flags)
    return any(f in have for f in wanted)


def cpu_dtype(checkpoint_dtype: torch.dtype | None, flags: Iterable[str] | None = None
              ) -> tuple[torch.dtype | None, str | None]:
    """``(dtype to load, note)`` for a CPU run that did not name a dtype: the checkpoint's own, unless it
    is a half type this CPU has no fast kernels for; then float32, and the note says why (once)."""
    if checkpoint_dtype is None or fast_half_on_cpu(checkpoint_dtype, flags):
        return None, None
    name = str(checkpoint_dtype).replace("torch.", "")
    wanted = "/".join(_FAST_HALF_FLAGS[checkpoint_dtype][:2])
    return torch.float32, (f"dtype: float32, not the checkpoint's {name}: this CPU has no {wanted} instructions, so "
                           f"{name} would run several times slower (pass --dtype {name} or --dtype auto to keep it)")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(cores: int | None = None, load: float | None = None, processes: int = 1) -> dict:
    """The automatic choice (nothing is set): usable cores less the 1-minute load average, shared by the
    ``processes`` of a data-parallel job on this node, rounded, at least 1.
    ``{"threads": n, "chosen_by": "free cores: ..."}``."""
    cores = usable_cores() if cores is None else cores
    load = _load_average() if load is None else load
    processes = max(1, int(processes))
    shared = f", shared by {processes} processes on this node" if processes > 1 else ""
    return {"threads": max(1, min(cores // processes or 1, round((cores - load) / processes))),
            "chosen_by": f"free cores: {cores} usable, load {load:.2f}{shared}"}


_AUTO: dict | None = None  # the process's first automatic choice: later runs in the same process keep it


def choose_threads(requested: int | None, device: str = "cpu", reason: str = "--threads") -> dict:
    """Set torch's intra-op threads for this process and return what was chosen and why (recorded in
    every run's ``metadata.json``): ``requested`` wins (``--threads``, or what ``reason`` names: a resumed
    run's own count); else ``$VLMHEADS_THREADS``; else, on CPU, ``auto_threads`` (decided once per
    process); on an accelerator torch's default is kept (the CPU only feeds the device)."""
    global _AUTO
    if requested is not None:
        if requested < 1:
            raise InputError(f"--threads must be at least 1, got {requested}")
        choice = {"threads": requested, "chosen_by": reason}
    elif os.environ.get("VLMHEADS_THREADS", "").strip():
        env = os.environ["VLMHEADS_THREADS"].strip()
        if not env.isdigit() or int(env) < 1:
            raise InputError(f"VLMHEADS_THREADS={env!r} is not a whole number >= 1; unset it or fix it")
        choice = {"threads": int(env), "chosen_by": "VLMHEADS_THREADS"}
    elif not str(device).startswith("cpu"):
        processes = parallel.world().local_size
        if processes == 1:
            return {"threads": torch.get_num_threads(), "chosen_by": f"torch default ({device} run)"}
        choice = {"threads": max(1, usable_cores() // processes),
                  "chosen_by": f"{device} run: {usable_cores()} cores shared by {processes} processes on this node"}
    else:
        _AUTO = _AUTO or auto_threads(processes=parallel.world().local_size)
        choice = dict(_AUTO)
    torch.set_num_threads(choice["threads"])
    return choice
