"""Data parallelism: one full model per process, each process a share of whole batches, every process
the gathered results in single-process order.

    torchrun --nproc_per_node 8 -m heads.locate -- --function spatial --device cuda
    accelerate launch --multi_gpu --num_processes 8 -m heads.locate -- --function spatial --device cuda
    python -m heads.locate --function spatial --out RUN_DIR --shard 0/4     (one job of an array of 4)

(``--`` keeps torchrun from reading the command's options as its own: ``--n`` is a prefix of its ``--nnodes``.)

A launcher starts the processes and says who they are in the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``; torchrun and ``accelerate launch --multi_gpu`` both set them);
``start()`` reads it and joins the process group. A command started without a launcher is a world of
one, and runs the very same code.

The unit of work is the batch one process would run. Cutting batches is not neutral: resample
ablation borrows each row's replacement from its neighbour in the batch, so sharing out single
examples changes every effect. ``map_batches(fn, batches)`` gives rank r the batches i with
i % world == r (strided, so an uneven last share is one batch and sorted workloads balance), runs
``fn`` on each, gathers every rank's results to every rank (``all_gather_object`` over gloo: results
travel as CPU objects whatever device computes them) and returns them in batch order. Every reduce
after it (means, bootstrap intervals, selection, a screen's candidates) then runs on every rank on the
same values in the same order as in one process, so the outputs are bit-identical and what a later
step needs from an earlier one is already on every rank; only ``broadcast`` is needed for what rank 0
alone decides (the run directory, which saved stages a resume may use). Rank 0 alone writes, prints
and draws the progress bar (``World.main``).

Failures: a rank whose share raises sends its error in place of results; every other rank then
raises ``RankFailed`` with that rank's number and message (the failing rank re-raises its own error:
its traceback, or its one line for bad input), so the job ends within seconds, not at the collective timeout. A collective that
fails (a rank died, or ranks reached different steps and the timeout ran out) raises
``CollectiveFailed`` naming the step. The timeout is ``$VLMHEADS_COLLECTIVE_TIMEOUT`` seconds
(default 1800): a rank waits at a gather for the slowest rank's share, so it must exceed one stage.

Job arrays (SLURM ``--array``) have no launcher: ``--shard I/N`` makes each job rank I of N, and the
ranks meet through files in the shared run directory (``RUN_DIR/shards/JOB/``: each gather is one
file per rank, written atomically, read by all) instead of gloo; everything else is the same code, so
the outputs are the same. The N jobs must be able to run at the same time (each waits for the others at
every gather); a shard that stops beating its heartbeat file for ``HEARTBEAT_LOST_S`` ends the others.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .errors import InputError

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_TIMEOUT_S = 1800.0
HEARTBEAT_S = 5.0  # a shard touches its heartbeat file this often
HEARTBEAT_LOST_S = 60.0  # a started shard whose heartbeat is older than this has stopped


class RankFailed(Exception):
    """Another rank's share raised; ``rank`` and ``message`` say which and what."""

    def __init__(self, rank: int, step: str, message: str) -> None:
        super().__init__(f"rank {rank} failed in {step}: {message} (rank {rank}'s own output says more)")
        self.rank, self.step, self.message = rank, step, message


class CollectiveFailed(Exception):
    """A gather or broadcast that could not complete: another rank left, or the ranks reached different steps."""


@dataclass(frozen=True)
class World:
    """Who this process is among the job's processes (a world of one without a launcher)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this node: which of the node's devices is this process's
    local_size: int = 1  # processes on this node: they share its cores
    launcher: str | None = None  # "torchrun", "accelerate", "shards" (--shard I/N), or None (one process)
    timeout_s: float = DEFAULT_TIMEOUT_S
    shard_dir: str | None = None  # --shard: the folder the ranks meet in (RUN_DIR/shards/JOB)

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes, prints and draws progress."""
        return self.rank == 0

    def share(self, n: int) -> list[int]:
        """The item indices of ``range(n)`` this rank computes: every ``size``-th from ``rank`` (empty for
        an idle rank when there are fewer items than ranks)."""
        return list(range(self.rank, n, self.size))

    def to_json(self) -> dict:
        return asdict(self)


_ACTIVE = World()
_DEPTH = 0  # map_batches calls in progress on this rank: a map inside a map's share runs locally


def world() -> World:
    """The active world (``start`` sets it; a world of one before and without it)."""
    return _ACTIVE


def from_environment(env: dict | None = None) -> World:
    """The world a launcher describes in the environment (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
    ``LOCAL_WORLD_SIZE``, as torchrun and ``accelerate launch`` set them); a world of one without them.
    Inconsistent values are refused with what was found."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return World(timeout_s=_timeout(env))
    try:
        size, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise InputError(f"RANK={env.get('RANK')!r} WORLD_SIZE={env.get('WORLD_SIZE')!r} LOCAL_RANK="
                         f"{env.get('LOCAL_RANK')!r}: not whole numbers; start the command with torchrun or "
                         f"accelerate launch, or unset them") from None
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < max(local_size, 1):
        raise InputError(f"RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_size} do "
                         f"not describe a process of the job; start the command with torchrun or accelerate launch")
    launcher = "accelerate" if any(k.startswith("ACCELERATE_") for k in env) else "torchrun"
    return World(rank, size, local_rank, max(local_size, 1), launcher if size > 1 else None, _timeout(env))


def _timeout(env) -> float:
    text = str(env.get("VLMHEADS_COLLECTIVE_TIMEOUT", "")).strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InputError(f"VLMHEADS_COLLECTIVE_TIMEOUT={text!r} is not a positive number of seconds; fix or unset it")
    return value


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``: shard I (counted from 0, as ``$SLURM_ARRAY_TASK_ID`` with ``--array=0-3``) of N."""
    index, _, total = str(text).partition("/")
    if not (index.strip().isdigit() and total.strip().isdigit()):
        raise InputError(f"--shard {text!r}: write it as I/N, e.g. --shard 0/4 (I counted from 0)")
    index, total = int(index), int(total)
    if total < 1 or index >= total:
        raise InputError(f"--shard {text}: I must be 0..N-1 and N at least 1 (--shard 0/{max(total, 1)} .. "
                         f"{max(total, 1) - 1}/{max(total, 1)})")
    return index, total


def shard_world(shard: str, shard_dir: Path, env: dict | None = None) -> World:
    """The world of ``--shard I/N`` meeting in ``shard_dir`` (no launcher may be running it too)."""
    index, total = parse_shard(shard)
    launched = from_environment(env)
    if launched.size > 1:
        raise InputError(f"--shard {shard} under {launched.launcher} (process {launched.rank} of {launched.size}): "
                         f"use one or the other")
    return World(index, total, 0, 1, "shards", launched.timeout_s, str(shard_dir))


def start(env: dict | None = None, shard: str | None = None, shard_dir: Path | None = None) -> World:
    """Join the launcher's process group (gloo; once per process), or with ``shard`` the shards' folder
    (``_Files``), and make the world the active one."""
    global _ACTIVE, _FILES
    found = shard_world(shard, Path(shard_dir), env) if shard else from_environment(env)
    if found.launcher == "shards" and found.size > 1:
        _FILES = _Files(found)
    elif found.size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=found.rank, world_size=found.size,
                                    timeout=timedelta(seconds=found.timeout_s))
    _ACTIVE = found
    return found


def stop() -> None:
    """Leave the process group or the shards' folder (if any); the world is one process again."""
    global _ACTIVE, _FILES
    if _FILES is not None:
        _FILES.close()
        _FILES = None
    elif _ACTIVE.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _ACTIVE = World()


class _Files:
    """Gathers through a shared folder, for ``--shard I/N`` jobs that no launcher connects.

    Gather number k is ``k.RANK.pt`` from every rank (``torch.save`` to a temporary name, then a rename, so
    a reader never sees half a file); a rank polls until all N are there. Once a rank has all of gather k,
    every rank has finished reading k-1, so it deletes its own file of k-1. ``started.RANK.json`` is written
    once per shard (a second job given the same shard and folder is refused); ``alive.RANK`` is touched every
    ``HEARTBEAT_S`` by a daemon thread, so a shard that died is noticed in ``HEARTBEAT_LOST_S``, not at the
    timeout."""

    def __init__(self, world: World) -> None:
        self.world, self.dir, self.seq = world, Path(world.shard_dir), 0
        self.dir.mkdir(parents=True, exist_ok=True)
        mark = self.dir / f"started.{world.rank}.json"
        try:
            fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise InputError(f"--shard {world.rank}/{world.size}: {mark} exists: this shard of this job already ran "
                             f"there; give every shard of a new attempt another --shard-job (or a new --out)") from None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._beating, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        (self.dir / f"alive.{self.world.rank}").write_text(str(time.time()))

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()

    def _path(self, seq: int, rank: int) -> Path:
        return self.dir / f"{seq}.{rank}.pt"

    def gather(self, value: Any, step: str) -> list:
        import torch

        seq, self.seq = self.seq, self.seq + 1
        mine = self._path(seq, self.world.rank)
        buffer = io.BytesIO()
        torch.save({"step": step, "value": value}, buffer)
        partial = mine.with_suffix(".partial")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, mine)
        t0, wait = time.time(), 0.01
        while True:
            missing = [r for r in range(self.world.size) if not self._path(seq, r).is_file()]
            if not missing:
                break
            waited = time.time() - t0
            lost = [r for r in missing if self._lost(r)]
            if lost or waited > self.world.timeout_s:
                why = (f"shard {', '.join(map(str, lost))} stopped (no heartbeat for {HEARTBEAT_LOST_S:.0f} s; its own "
                       f"output says why)" if lost else
                       f"waited {waited:.0f} s for shard {', '.join(map(str, missing))} (not started, slower, or at "
                       f"another step; VLMHEADS_COLLECTIVE_TIMEOUT sets the limit)")
                raise CollectiveFailed(f"shard {self.world.rank}: {step}: {why}")
            time.sleep(wait)
            wait = min(1.0, wait * 1.5)
        parts = [torch.load(self._path(seq, r), weights_only=False) for r in range(self.world.size)]
        steps = {p["step"] for p in parts}
        if len(steps) > 1:
            raise CollectiveFailed(f"shard {self.world.rank}: the shards reached different steps "
                                   f"({'; '.join(sorted(steps))}): were they all given the same command line?")
        if seq > 0:
            self._path(seq - 1, self.world.rank).unlink(missing_ok=True)
        return [p["value"] for p in parts]

    def _lost(self, rank: int) -> bool:
        beat = self.dir / f"alive.{rank}"
        try:
            return time.time() - beat.stat().st_mtime > HEARTBEAT_LOST_S
        except FileNotFoundError:
            return False  # not started yet (a job array's task still queued): wait, up to the timeout


_FILES: _Files | None = None


def use(new: World) -> World:
    """Make ``new`` the active world without touching a process group (tests); returns the previous one."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, new
    return previous


def _collective(step: str, op: Callable[[], T]) -> T:
    try:
        return op()
    except Exception as err:  # noqa: BLE001 - gloo raises RuntimeError / DistBackendError / DistNetworkError
        text = (str(err).splitlines() or [type(err).__name__])[0][:200]
        if "imeout" in text or "timed out" in text:
            why = (f"timed out after {_ACTIVE.timeout_s:.0f} s waiting for the other ranks (they reached different "
                   f"steps, or one is stuck; VLMHEADS_COLLECTIVE_TIMEOUT sets the limit)")
        else:
            why = f"another rank left the job (it failed or was killed; its own output says why): {text}"
        raise CollectiveFailed(f"rank {_ACTIVE.rank}: {step}: {why}") from err


def gather(value: Any, step: str = "gather") -> list:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a world of one)."""
    if _ACTIVE.size == 1:
        return [value]
    if _FILES is not None:
        return _FILES.gather(value, step)
    import torch.distributed as dist

    out: list = [None] * _ACTIVE.size
    _collective(step, lambda: dist.all_gather_object(out, value))
    return out


def broadcast(value: Any, step: str = "broadcast") -> Any:
    """Rank 0's ``value`` on every rank (what the others pass is ignored)."""
    if _ACTIVE.size == 1:
        return value
    if _FILES is not None:
        return _FILES.gather(value if _ACTIVE.main else None, step)[0]
    import torch.distributed as dist

    box = [value if _ACTIVE.main else None]
    _collective(step, lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def map_batches(fn: Callable[[T], R], items: Sequence[T], step: str = "batches") -> list[R]:
    """``[fn(item) for item in items]``, each rank computing its share (``World.share``) and every rank
    returned all results in item order. In a world of one, or inside another ``map_batches``'s share, a
    plain loop. ``fn`` must return what pickles (CPU tensors, numbers)."""
    global _DEPTH
    items = list(items)
    if _ACTIVE.size == 1 or _DEPTH:
        _DEPTH += 1
        try:
            return [fn(item) for item in items]
        finally:
            _DEPTH -= 1
    mine: dict[int, R] = {}
    error: BaseException | None = None
    _DEPTH += 1
    try:
        for i in _ACTIVE.share(len(items)):
            mine[i] = fn(items[i])
    except Exception as err:  # noqa: BLE001 - sent to the other ranks, then re-raised here
        error = err
        mine = {}
    finally:
        _DEPTH -= 1
    said = None if error is None else f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
    parts = gather((said, mine), f"{step} (gathering {len(items)} results)")
    if error is not None:
        raise error
    for rank, (message, _) in enumerate(parts):
        if message is not None:
            raise RankFailed(rank, step, message)
    merged: dict[int, R] = {}
    for _, part in parts:
        merged.update(part)
    if len(merged) != len(items):  # a rank computed another share: a bug, never a wrong result
        raise CollectiveFailed(f"{step}: {len(merged)} results gathered for {len(items)} items")
    return [merged[i] for i in range(len(items))]


def describe() -> dict:
    """What metadata.json records of the job: the world, and each rank's host, device and threads
    (gathered; call on every rank)."""
    import torch

    me = {"rank": _ACTIVE.rank, "host": socket.gethostname(), "pid": os.getpid(),
          "threads": torch.get_num_threads(), "cuda_device": _cuda_device()}
    job = {k: v for k, v in _ACTIVE.to_json().items() if k not in ("rank", "local_rank")}
    return {**job, "ranks": gather(me, "describing the ranks")}


def _cuda_device() -> int | None:
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def rank_device(device: str) -> str:
    """The device this rank computes on: ``cuda`` (or any ``cuda:N``: every rank is given the same command
    line) becomes the rank's own GPU, ``cuda:LOCAL_RANK``; cpu and mps stay as they are."""
    if _ACTIVE.size == 1 or not str(device).startswith("cuda"):
        return device
    return f"cuda:{_ACTIVE.local_rank}"


def gpu_block(local_rank: int, local_size: int, visible: int) -> list[int]:
    """The GPUs (indices among the visible ones) a rank's device map may use when each process of a node
    holds a model spread over several: the node's ``visible`` GPUs cut into ``local_size`` equal blocks
    (left-over GPUs unused), block ``local_rank``. Refused when there are fewer GPUs than processes."""
    if visible < local_size:
        raise InputError(f"{local_size} processes on this node but {visible} visible GPU(s): a device map per "
                         f"process needs at least one GPU each; start fewer processes (--nproc_per_node)")
    size = visible // local_size
    return list(range(local_rank * size, (local_rank + 1) * size))


def rank_max_memory(caps: dict | None, visible: int, total_bytes: Callable[[int], int]) -> dict | None:
    """``--max-memory`` for this rank's device map: only the GPUs of its block (``gpu_block``), each at the
    cap given for it or its whole memory (``total_bytes(i)``), and the cpu/disk caps as given. A world of
    one keeps ``caps`` as they are."""
    if _ACTIVE.size == 1:
        return caps
    caps = dict(caps or {})
    block = gpu_block(_ACTIVE.local_rank, _ACTIVE.local_size, visible)
    out = {i: caps.get(i, total_bytes(i)) for i in block}
    out.update({k: v for k, v in caps.items() if not isinstance(k, int)})
    return out
