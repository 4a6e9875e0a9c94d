"""Run directories: every run writes ``config.json`` + ``metadata.json`` beside its results.

A run directory is never overwritten: ``new_run_dir`` picks ``<root>/<command>/<timestamp>_<slug>``
(adding ``-2``, ``-3``... on a clash), and an explicit ``--out`` that already holds files is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata as _md
from pathlib import Path
from typing import Any, Callable, Sequence

from . import parallel
from .errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: run directories are not locked there
    fcntl = None

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO_ROOT / "results"
_PACKAGES = ("vlmheads", "torch", "transformers", "nnsight", "tokenizers", "accelerate", "numpy", "pandas", "plotly",
             "pillow")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:60] or "run"


class RunDirTaken(UserError, FileExistsError):
    """An ``--out`` that is a file or already holds files."""


def check_out(out: str | Path | None, allow: Sequence[str] = ()) -> None:
    """Refuse an ``--out`` that is a file or already holds files (runs are never overwritten); entries named in
    ``allow`` do not count (``shards``: where the jobs of a sharded run meet before shard 0 makes the run)."""
    if out is None:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirTaken(f"--out {out} is a file; pass a directory path (it is created if missing)")
    RunLock(out, "").check()
    if out.is_dir() and any(entry.name not in allow for entry in out.iterdir()):
        raise RunDirTaken(f"--out {out} already holds files; runs are never overwritten: "
                          f"choose a new directory or leave --out unset")


def new_run_dir(command: str, name: str, out: str | Path | None = None, root: str | Path | None = None,
                allow: Sequence[str] = ()) -> Path:
    """Create and return a fresh run directory (``allow``: as in ``check_out``)."""
    if out is not None:
        check_out(out, allow)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    base = Path(root) if root is not None else DEFAULT_RESULTS
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = base / command / f"{stamp}_{slug(name)}"
    n = 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base / command / f"{stamp}_{slug(name)}-{n}"


def git_state() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = _md.version(name)
        except _md.PackageNotFoundError:
            versions[name] = None
    return versions


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a reader (or a
    full disk, or Ctrl-C) never leaves a truncated file under the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_path(path: Path) -> Path:
    """The checksum record beside a saved file: ``NAME.sha256`` (JSON: sha256, bytes, fingerprint)."""
    return Path(path).with_name(Path(path).name + ".sha256")


_CODE: dict = {}


def code_version() -> str:
    """sha256 (16 hex digits) of the library's own source (every ``src/vlmheads/**/*.py``, path and bytes):
    the code a stage was computed by. Any edit to the library changes it, a README edit does not; read once
    per process."""
    if "digest" not in _CODE:
        import hashlib

        package = Path(__file__).resolve().parent
        digest = hashlib.sha256()
        for path in sorted(package.rglob("*.py")):
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE["digest"] = digest.hexdigest()[:16]
    return _CODE["digest"]


def fingerprint(config: dict) -> str:
    """A short digest of a run's config: a stage saved under another config is not this run's."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_torch_atomic(path: Path, value: Any, fingerprint: str | None = None, code: str | None = None) -> None:
    """``torch.save`` to a temporary file beside ``path`` (its folder made if missing), its checksum (and
    the run's config ``fingerprint`` and the ``code`` version that computed it) written beside it, then
    renamed over ``path``: a crash or Ctrl-C never leaves half a checkpoint or stage under the final name,
    and a file that is there has its checksum."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(value, tmp)
        write_json(check_path(path), {"sha256": _sha256(tmp), "bytes": tmp.stat().st_size,
                                      "fingerprint": fingerprint, **({"code": code} if code else {})})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_torch_checked(path: Path, fingerprint: str | None = None, code: str | None = None) -> tuple[Any, str | None]:
    """``(value, None)`` for a file ``save_torch_atomic`` wrote whose bytes still match their checksum
    (and whose fingerprint is ``fingerprint`` and code version ``code``, when given); else ``(None, why)``:
    no checksum, cut short, bytes changed, made under another config or by another version of the code,
    or unreadable. Nothing unverified is returned."""
    import torch

    path = Path(path)
    try:
        check = json.loads(check_path(path).read_text())
        want, size = check["sha256"], int(check["bytes"])
    except FileNotFoundError:
        return None, f"{path.name} has no checksum ({check_path(path).name}), so it cannot be trusted"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{check_path(path).name} is unreadable ({type(err).__name__})"
    actual = path.stat().st_size
    if actual != size:
        return None, f"{path.name} is cut short or grown ({actual} bytes, {size} when saved)"
    if _sha256(path) != want:
        return None, f"{path.name} does not match its checksum (its bytes changed since it was saved)"
    if fingerprint is not None and check.get("fingerprint") != fingerprint:
        return None, f"{path.name} was saved by a run with another config"
    if code is not None and check.get("code") != code:
        return None, (f"{path.name} was computed by another version of the code (vlmheads source "
                      f"{check.get('code') or 'unrecorded'}; this one is {code})")
    try:
        return torch.load(path, weights_only=False), None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        return None, f"{path.name} cannot be read ({type(err).__name__}: {(str(err).splitlines() or [''])[0]})"


def checked_stage(path: Path | None, fingerprint: str | None = None, log: Callable[[str], None] | None = None,
                  code: str | None = None) -> tuple | None:
    """``(value,)`` of the stage a previous run saved at ``path`` when it checks out (``load_torch_checked``),
    else None; ``log`` says which stage is there but does not check out, and why."""
    if path is None or not path.is_file():
        return None
    value, why = load_torch_checked(path, fingerprint, code)
    if why is None:
        return (value,)
    if log is not None:
        log(f"warning: stage {path.parent.name}/{path.name} not used: {why}; recomputing it")
    return None


def saved_stage(path: Path | None, compute: Callable[[], Any], fingerprint: str | None = None,
                log: Callable[[str], None] | None = None, code: str | None = None) -> tuple[Any, bool]:
    """``(value, loaded)``: the value a previous run saved at ``path`` (``loaded`` True) when it checks out
    (``checked_stage``), else ``compute()``, saved there as it finishes (``save_torch_atomic``); a saved
    stage that does not check out is recomputed, and ``log`` says which and why. ``path`` None computes
    without saving. How ``--resume`` keeps finished work, and never trusts a damaged or foreign stage."""
    saved = checked_stage(path, fingerprint, log, code)
    if saved is not None:
        return saved[0], True
    value = compute()
    if path is not None:
        save_torch_atomic(path, value, fingerprint, code)
    return value, False


class StageStore:
    """One run's stages in ``stages_dir`` (None: computed, never saved), under its config's fingerprint:
    ``store(name, compute, label)`` is ``saved_stage(stages_dir / f"{name}.pt", compute, fingerprint, log)``: a
    saved stage that does not check out (damaged, another config, another version of the library:
    ``code_version``) is recomputed, and ``log`` says which and why. ``resumed`` lists the labels (default:
    the names) of the stages a previous run had saved. What locate, intervene and flow keep their finished
    work in, and how ``--resume`` never trusts a damaged or foreign stage.

    With several processes (``vlmheads.parallel``) rank 0 alone reads and writes the stages: what it found
    saved is sent to every rank, otherwise every rank computes (each its share) and rank 0 saves. A stage
    holds the reduced results, the same for any number of processes, so a run resumes with another."""

    def __init__(self, stages_dir: Path | None, config: dict, log: Callable[[str], None] | None = None):
        self.dir, self.log, self.resumed = stages_dir, log, []
        self.fingerprint, self.code = fingerprint(config), code_version()

    def _path(self, name: str) -> Path | None:
        return None if self.dir is None else Path(self.dir) / f"{name}.pt"

    def _saved(self, path: Path | None) -> tuple | None:
        return checked_stage(path, self.fingerprint, self.log, self.code)

    def __call__(self, name: str, compute: Callable[[], Any], label: str | None = None) -> tuple[Any, bool]:
        """``(value, loaded)``: the saved stage (``loaded`` True) or ``compute()``, saved as it finishes."""
        path, world = self._path(name), parallel.world()
        saved = parallel.broadcast(self._saved(path) if world.main else None,
                                   f"stage {label or name}: which stages are saved")
        if saved is not None:
            self.resumed.append(label or name)
            return saved[0], True
        value = compute()
        if world.main and path is not None:
            save_torch_atomic(path, value, self.fingerprint, self.code)
        return value, False

    def items(self, names: Sequence[str], compute: Callable[[int], Any], step: str) -> list:
        """Stages that are one batch each (``names[i]`` holds ``compute(i)``), computed as one
        ``parallel.map_batches``: the saved ones are loaded (rank 0 reads them and sends them to every rank),
        the others shared out. One process saves each as it finishes; several save theirs (rank 0) after
        the gather."""
        world = parallel.world()
        paths = [self._path(name) for name in names]
        found = {i: self._saved(path) for i, path in enumerate(paths)} if world.main else {}
        saved = parallel.broadcast({i: box[0] for i, box in found.items() if box is not None},
                                   f"{step}: which stages are saved")
        todo = [i for i in range(len(names)) if i not in saved]

        def one(i: int) -> Any:
            value = compute(i)
            if world.size == 1 and paths[i] is not None:
                save_torch_atomic(paths[i], value, self.fingerprint, self.code)
            return value

        computed = dict(zip(todo, parallel.map_batches(one, todo, step)))
        if world.size > 1 and world.main:
            for i, value in computed.items():
                if paths[i] is not None:
                    save_torch_atomic(paths[i], value, self.fingerprint, self.code)
        self.resumed += [names[i] for i in sorted(saved)]
        return [saved[i] if i in saved else computed[i] for i in range(len(names))]


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows of dicts (same keys) as CSV with a header, atomically."""
    import csv
    import io

    if not rows:
        raise ValueError(f"nothing to write to {path}: no rows")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


@dataclass(frozen=True)
class ModelOptions:
    """The options every job records about how its model ran (the commands' --seed, --device, --dtype,
    --device-map, --attn-implementation); each job's config extends it."""

    bootstrap: int = 1000
    seed: int = 0
    device: str = "cpu"
    dtype: str | None = None
    device_map: str | None = None
    max_memory: str | None = None  # --max-memory, as given (caps per device for the device map)
    attn_implementation: str | None = None
    threads: int | None = None  # --threads as given (None: chosen from the free cores; metadata.json says what)
    rendering: dict | None = None  # how the organism's scenes are drawn for this model (None: clean)
    allow_random_init: bool = False  # --allow-random-init: weights that do not cover the model were accepted

    @cached_property
    def scene_rendering(self):
        """``rendering`` as a ``world.scenes.Rendering`` (the organism's scenes as this job's model sees them),
        parsed once per config: what every loader the job calls is given."""
        from .world.scenes import Rendering

        return Rendering.from_dict(self.rendering)


class RunInUse(UserError, OSError):
    """Another live process holds the run directory's lock."""


class RunIncomplete(UserError, OSError):
    """The outputs could not be written (full disk, read-only folder): nothing that looks finished is left."""


class RunLock:
    """``RUN_DIR/.lock``: one process at a time writes a run directory. The lock is the operating system's
    (``flock`` on the file), so it ends with its process however that ends (a SIGKILL too) and is never
    stale; the file holds the writer's pid, host, command and start, so a second process is refused with
    those. ``with RunLock(run_dir, command):`` acquires and releases it (POSIX; elsewhere it locks nothing)."""

    NAME = ".lock"

    def __init__(self, run_dir: Path, command: str) -> None:
        self.run_dir, self.command = Path(run_dir), command
        self.path = self.run_dir / self.NAME
        self._fd: int | None = None

    def holder(self) -> dict | None:
        """The record of the process that holds the lock now (this one included); None if nobody does."""
        if fcntl is None or not self.path.is_file():
            return None
        if self._fd is not None:
            return self._record()
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._record() or {"pid": "?", "host": "?", "command": "?", "started": "?"}
        finally:
            os.close(fd)  # a lock this probe took goes with the descriptor
        return None

    def _record(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def check(self) -> None:
        """Refuse, with who holds it, a run directory another process is writing."""
        info = self.holder()
        if info is not None and self._fd is None:
            raise RunInUse(f"{self.run_dir} is in use by pid {info.get('pid')} on {info.get('host')} "
                           f"({info.get('command')}, started {info.get('started')}): wait for it to finish or use "
                           f"another --out")

    def __enter__(self) -> "RunLock":
        import socket

        if fcntl is None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self.check()
                raise RunInUse(f"{self.run_dir} is in use by another process") from None
            try:  # the file may have been removed (its holder finished) between open and flock: take it anew
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                             "started": _dt.datetime.now().isoformat(timespec="seconds")})
        os.ftruncate(fd, 0)
        os.write(fd, record.encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # removed while still held: a waiter sees another inode and retries
        finally:
            os.close(self._fd)
            self._fd = None


class RunRecord:
    """Collects metadata for one run and writes it; use as ``with RunRecord(dir, ...) as rec:``.

    ``metadata.json`` is written at the start (status "running") and rewritten at the end with the
    timings and status "finished" or "failed", so a crashed run still says what it was.
    """

    def __init__(self, run_dir: Path, command: str, config: dict[str, Any], argv: Sequence[str] | None = None,
                 seed: int | None = None, **identity: Any) -> None:
        self.run_dir = Path(run_dir)
        self.started = time.time()
        self.incomplete: str | None = None  # why the outputs could not be written (writing_outputs)
        self.meta: dict[str, Any] = {
            "command": command, "run_id": self.run_dir.name, "argv": list(sys.argv[:1]) + list(argv or []),
            "seed": seed, "git": git_state(), "code": code_version(), "versions": package_versions(),
            "platform": {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor()},
            "started": _dt.datetime.now().isoformat(timespec="seconds"), "status": "running", "timings": {},
            **identity,
        }
        write_json(self.run_dir / "config.json", config)
        write_json(self.run_dir / "metadata.json", self.meta)

    def time(self, name: str, seconds: float) -> None:
        self.meta["timings"][name] = round(seconds, 3)

    @contextmanager
    def writing_outputs(self, then: str = "re-run the command"):
        """Wrap the writing of a run's outputs: if any of them cannot be written (a full disk, a read-only
        folder), the ones already written are removed again, so no file that looks finished is left, and
        ``RunIncomplete`` says so (metadata.json: status "incomplete: ..."; finished stages are kept)."""
        before = set(self.run_dir.iterdir())
        try:
            yield
        except OSError as err:
            for path in set(self.run_dir.iterdir()) - before:
                if path.is_file() and path.name not in ("config.json", "metadata.json"):
                    path.unlink(missing_ok=True)
            self.incomplete = f"could not write the outputs ({type(err).__name__}: {err.strerror or err})"
            raise RunIncomplete(f"{self.incomplete} in {self.run_dir}; the run is marked incomplete in metadata.json "
                                f"and left no output that looks finished: free space or fix the folder, then "
                                f"{then}") from None

    def __enter__(self) -> "RunRecord":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        self.meta["timings"]["total"] = round(time.time() - self.started, 3)
        if exc is None:
            self.meta["status"] = "finished"
        elif issubclass(exc_type, KeyboardInterrupt):
            self.meta["status"] = "interrupted"
        elif self.incomplete:
            self.meta["status"] = f"incomplete: {self.incomplete}"
        else:
            self.meta["status"] = f"failed: {exc_type.__name__}: {exc}"
        try:
            write_json(self.run_dir / "metadata.json", self.meta)
        except OSError as err:
            if exc is None:
                raise RunIncomplete(f"could not write {self.run_dir}/metadata.json ({err.strerror or err}); it still "
                                    f"says status 'running', so the run does not count as finished") from None
            # the disk that failed the run fails this too: metadata.json keeps status "running", never "finished"

