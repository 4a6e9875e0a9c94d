"""What every command shares: the common options, one way to fail, and run directories that are
never left empty.

    def build_parser():   # imports the library: built inside run_command's guard
        parser = command_parser("python -m heads.locate", __doc__)
        add_model_options(parser); add_run_options(parser, batch_size=32)
        ...
    return run_command(body, build_parser, argv)   # body(args) -> int

Bad input ends in one line on stderr (``error: ...``, naming the problem and the fix) and exit status
2; Ctrl-C ends in one line (what was kept) and exit status 130; neither prints a traceback. Every
check that needs no model runs before a model is loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence


class UsageError(Exception):
    """Bad input: the message is the one line the user sees."""


def positive(minimum: int = 1):
    """An argparse ``type`` for whole numbers >= ``minimum`` (argparse prefixes the option's name)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse ``type`` for "a,b,c": the names, stripped, empty ones dropped (repeats are the parser's
    to warn about)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


_NOT_GIVEN = object()


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are the suite's one line and exit status 2; an option given an empty value
    (``--resume ""``) is refused, a name repeated in a list option (``--method a --method a``,
    ``--methods a,a``) is kept once with a warning, and ``args.given`` holds the options the command line
    set (so a command can refuse options that its chosen methods would ignore)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):  # noqa: D401 - argparse's entry point
        argv = list(sys.argv[1:] if args is None else args)
        parsed = super().parse_args(argv, namespace)
        for action in _all_actions(self):
            value, name = getattr(parsed, action.dest, None), _long_name(action)
            if value == "" or isinstance(value, list) and "" in value:
                raise UsageError(f"{name} is empty: give it a value or leave it out (see {self.prog} --help)")
            if isinstance(value, (list, tuple)) and len(set(map(str, value))) < len(value):
                kept = list(dict.fromkeys(value))
                for twice in sorted({str(v) for v in value if value.count(v) > 1}):
                    print(f"warning: {name} {twice} given {value.count(twice)} times: used once", file=sys.stderr)
                setattr(parsed, action.dest, type(value)(kept))
        parsed.given = self._given(argv)
        return parsed

    def _given(self, argv: list) -> frozenset:
        """The dests the command line set: the same arguments parsed again with every default a marker."""
        saved = {id(action): action.default for action in self._actions}
        collecting = (argparse._AppendAction, argparse._ExtendAction, argparse._CountAction)  # build on the default
        try:
            for action in self._actions:
                if action.dest != "help":
                    action.default = None if isinstance(action, collecting) else _NOT_GIVEN
            marked = super().parse_args(argv)
        finally:
            for action in self._actions:
                action.default = saved[id(action)]
        collected = {action.dest for action in self._actions if isinstance(action, collecting)}
        return frozenset(dest for dest, value in vars(marked).items()
                         if value is not (None if dest in collected else _NOT_GIVEN))


def _all_actions(parser: argparse.ArgumentParser) -> list:
    """A parser's actions and its sub-commands' (``organism train --resume``)."""
    actions = []
    for action in parser._actions:
        actions.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                actions.extend(_all_actions(sub))
    return actions


def _long_name(action: argparse.Action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def data_root_used(datasets) -> tuple[bool, str]:
    """``refuse_unused``'s entry for --data-root: used only by datasets read from a root (whatsup, vsr)."""
    from vlmheads.data.registry import reads_root

    return (any(reads_root(d) for d in datasets),
            f"{', '.join(datasets)} {'reads' if len(datasets) == 1 else 'read'} no data root (only whatsup: and vsr: "
            f"datasets do; the organism's scenes are drawn, cogvsr: names its file)")


def refuse_unused(args, needs: dict[str, tuple[bool, str]]) -> None:
    """Refuse an option the command line set (``args.given``) that this run would ignore: ``needs`` maps
    its dest to ``(used, why not)``, e.g. ``{"verify": ("ablation" in methods, "verify checks ablation's
    screen, and --methods has no ablation")}``. Read before anything loads."""
    for dest, (used, why) in needs.items():
        if dest in getattr(args, "given", ()) and not used:
            raise UsageError(f"--{dest.replace('_', '-')} has no effect here: {why}; drop it")


def command_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=(description or "").split("\n\n")[0])


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="organism", help="'organism' (default), a HF id or a local model directory")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--device-map", default=None,
                        help="spread the model over the visible devices: auto | balanced | sequential (needs "
                             "accelerate; --device is then ignored)")
    parser.add_argument("--max-memory", default=None, metavar="DEVICE=SIZE,...",
                        help="caps per device for --device-map, e.g. 0=70GiB,1=70GiB,cpu=120GiB (what does not fit "
                             "is offloaded)")
    parser.add_argument("--dtype", default=None,
                        help="auto | float32 | bfloat16 | float16 (default: the checkpoint's own dtype, except on a "
                             "CPU without fast kernels for it: float32; auto: the checkpoint's own always)")
    parser.add_argument("--attn-implementation", default=None,
                        help="eager | sdpa | flash_attention_2 (default: eager on CPU, sdpa on accelerators)")
    parser.add_argument("--allow-random-init", action="store_true",
                        help="load a model whose weights do not cover it (a weight missing or left over, a layer "
                             "count that is not the weights', or config.json alone): missing weights are randomly "
                             "initialised, left-over ones dropped; recorded (default: refused with the file named)")
    parser.add_argument("--threads", type=positive(), default=None,
                        help="torch CPU threads of this process (default: the cores free when it starts, or "
                             "$VLMHEADS_THREADS; recorded in metadata.json)")


def add_data_options(parser: argparse.ArgumentParser, function: str, n: int, n_min: int) -> None:
    """--function, --dataset, --data-root, --n (the jobs that read one function's questions)."""
    parser.add_argument("--function", default=function, help=f"cognitive function or alias (default: {function})")
    parser.add_argument("--dataset", default="organism:decomposed", help="dataset name (default: organism:decomposed)")
    parser.add_argument("--data-root", default=None, help="folder of a real dataset (whatsup/vsr)")
    parser.add_argument("--n", type=positive(n_min), default=n, help=f"examples per function (default {n})")


def add_run_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--batch-size", type=positive(), default=batch_size,
                        help=f"examples per forward pass (default {batch_size})")
    parser.add_argument("--seed", type=int, default=0, help="seed of data sampling and bootstraps (default 0)")
    parser.add_argument("--out", default=None, help="run directory (default: results/<command>/<run_id>); must "
                                                    "not hold files: runs are never overwritten")


def model_spec(args):
    """The job's ``ModelSpec`` from the parsed options (a new run; ``--resume`` takes its run's config's)."""
    from vlmheads.models.spec import ModelSpec

    return ModelSpec.of(args)


def check_model_options(args, spec=None):
    """The model's spec (default: from ``args``) and --out, checked before anything is loaded; returns the spec."""
    spec = spec or model_spec(args)
    spec.check()
    check_out(args.out)
    return spec


def check_out(out: str | None) -> None:
    from vlmheads import parallel
    from vlmheads.runs import check_out as check

    if parallel.world().main:  # rank 0 alone makes the directory (the others may find it made already)
        check(out, _meeting_place())


def model_rendering(model: str | None) -> dict | None:
    """The organism rendering a local model declares in its config.json (``vlmheads_rendering``), read
    before the model loads; None (clean scenes) for models that declare none and for hub ids."""
    from vlmheads.models.spec import ModelSpec

    return ModelSpec(model=model).rendering()


def load(args, spec=None):
    """The model of ``spec`` (default: from ``args``; checked by ``check_model_options``), with a processor;
    ``args.threads_choice`` says what threads it runs with (for metadata.json)."""
    loaded, args.threads_choice = (spec or model_spec(args)).load()
    for note in loaded.notes:
        print(note, flush=True)
    if loaded.processor is None:
        raise UsageError(f"{loaded.name} has no processor; save one beside the model (processor.save_pretrained)")
    return loaded


@contextmanager
def run_directory(command: str, name: str, out: str | None):
    """A fresh run directory, locked for this process (``runs.RunLock``: a second run given the same --out
    is refused with who holds it); removed again if the block leaves it empty (nothing finished to keep).
    Several processes (``vlmheads.parallel``): rank 0 makes and locks it, the others are told its path."""
    from vlmheads import parallel
    from vlmheads.runs import RunLock, new_run_dir

    if not parallel.world().main:
        yield Path(parallel.broadcast(None, "the run directory"))
        return
    run_dir = new_run_dir(command, name, out=out, allow=_meeting_place())
    try:
        with RunLock(run_dir, f"heads {command}"):
            parallel.broadcast(str(run_dir), "the run directory")
            yield run_dir
    finally:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)


def _meeting_place() -> tuple[str, ...]:
    """What a fresh run directory may already hold: ``shards/`` when this is a sharded run."""
    from vlmheads import parallel

    return ("shards",) if parallel.world().launcher == "shards" else ()


class _Bystander:
    """What a rank other than 0 holds in place of a ``RunRecord``: the same calls, nothing written."""

    def __init__(self, **identity) -> None:
        self.meta: dict = {"timings": {}, **identity}

    def time(self, name: str, seconds: float) -> None:
        self.meta["timings"][name] = round(seconds, 3)

    @contextmanager
    def writing_outputs(self, then: str = ""):
        yield

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def run_record(run_dir: Path, command: str, config: dict, **identity):
    """``runs.RunRecord`` on rank 0 (a ``_Bystander`` on the others); with several processes its metadata
    records them (``parallel.describe``: world size, launcher, each rank's host, device and threads)."""
    from vlmheads import parallel
    from vlmheads.runs import RunRecord

    world = parallel.world()
    if world.size > 1:
        same_job(config, identity.get("model"))
        identity["parallel"] = parallel.describe()  # a gather: every rank calls it
    return RunRecord(run_dir, command, config, **identity) if world.main else _Bystander(**identity)


def same_job(config: dict, model: dict | None) -> None:
    """Refuse, on every rank, a job whose ranks differ in config, code version or model (its files' digests,
    class, dtype and geometry; not the device): shards started with other options, another checkout or
    other weights would write outputs that no single process computes."""
    from vlmheads import parallel
    from vlmheads.runs import code_version, fingerprint

    mine = {"config": fingerprint(config), "code": code_version(),
            "model": {k: v for k, v in (model or {}).items() if k not in ("devices", "notes")}}
    every = parallel.gather(mine, "checking that every rank runs the same job")
    for rank, theirs in enumerate(every):
        for key in ("config", "code", "model"):
            if theirs[key] != every[0][key]:
                what = {"config": "options (config.json)", "code": "code version (vlmheads source)",
                        "model": "model (files, class, dtype or geometry)"}[key]
                raise UsageError(f"rank {rank} runs another {what} than rank 0: start every rank (shard) with the same "
                                 f"command line, checkout and model files")


def main_only(action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0 only (what writes files or prints a run's report)."""
    from vlmheads import parallel

    if parallel.world().main:
        action()


def model_config(spec) -> dict:
    """The model options of a job's config (``runs.ModelOptions`` and ``model``) from its ``ModelSpec``, with
    the organism rendering the model declares: what every command's config starts from."""
    return {**spec.options(), "rendering": spec.rendering()}


def defaults(config_class) -> dict:
    """``{field: default}`` of a job's config: the parser's defaults are read from here, not repeated."""
    import dataclasses

    return {f.name: f.default for f in dataclasses.fields(config_class)
            if f.default is not dataclasses.MISSING}


def config_from(config_class, args, spec=None, **given):
    """A job's config built from the parsed arguments by its dataclass fields: each field from ``given``,
    else from ``args`` under the same name, else its default; the model options and the organism rendering
    from the ``ModelSpec`` (default: ``model_spec(args)``; ``model_config``). A new option is one parser line
    and one field."""
    import dataclasses

    values = {**model_config(spec or model_spec(args)), **given}
    for f in dataclasses.fields(config_class):
        if f.name not in values and hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return config_class(**values)


def interrupted_run(run_dir: Path, command: str, what: str) -> tuple[dict, dict]:
    """``(config, metadata)`` of an interrupted ``command`` run in ``run_dir`` (``what``: "a locate run"),
    for ``--resume``; refused with the reason otherwise."""
    import json

    if not (run_dir / "config.json").is_file() or not (run_dir / "metadata.json").is_file():
        raise UsageError(f"--resume {run_dir}: not a run directory (no config.json / metadata.json)")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        meta = json.loads((run_dir / "metadata.json").read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"--resume {run_dir}: unreadable config.json or metadata.json ({err})") from None
    if meta.get("command") != command:
        raise UsageError(f"--resume {run_dir}: a {meta.get('command')!r} run, not {what}")
    if meta.get("status") == "finished":
        raise UsageError(f"--resume {run_dir}: the run has already finished; nothing to resume")
    from vlmheads.runs import RunLock

    from vlmheads import parallel

    if parallel.world().main:  # rank 0 holds the lock once it runs: the others would find it taken
        RunLock(run_dir, "").check()  # still being written by another process: refused before any model loads
    return saved, meta


def resumed_config(run_dir: Path, command: str, what: str, config_class) -> tuple:
    """``(config, metadata)`` of an interrupted ``command`` run (``interrupted_run``), the config rebuilt
    as ``config_class`` from its config.json (JSON's lists back to the tuples a frozen config holds);
    refused with the reason when it does not fit this version."""
    from vlmheads.typed import field_problem

    saved, meta = interrupted_run(run_dir, command, what)
    if not isinstance(saved, dict):
        raise UsageError(f"--resume {run_dir}: config.json must be a JSON object of options, got "
                         f"{type(saved).__name__}; the run is damaged: start a new one")
    problem = field_problem(config_class, saved, (run_dir / "config.json").read_text())
    if problem:
        line, reason = problem
        raise UsageError(f"--resume {run_dir / 'config.json'}:{line}: {reason} (edited by hand? restore it or start "
                         f"a new run)")
    try:
        config = config_class(**{k: _as_tuples(v) for k, v in saved.items()})
    except (TypeError, ValueError) as err:
        raise UsageError(f"--resume {run_dir}: config.json does not fit this version ({err})") from None
    return config, meta


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def resumed_from(previous: dict) -> dict:
    """What a resumed run's metadata records of the run it continues."""
    return {"previous_status": previous.get("status"), "previous_started": previous.get("started"),
            "previous_argv": previous.get("argv")}


@contextmanager
def existing_directory(run_dir: Path, command: str = "resume"):
    """An existing run directory, continued in place (``--resume``), locked for this process: a second
    ``--resume`` of a run still in progress is refused with who holds it; a killed run's lock is taken over."""
    from vlmheads import parallel
    from vlmheads.runs import RunLock

    if not parallel.world().main:
        parallel.broadcast(None, "the resumed run directory")
        yield Path(run_dir)
        return
    with RunLock(Path(run_dir), f"heads {command} --resume"):
        parallel.broadcast(str(run_dir), "the resumed run directory")
        yield Path(run_dir)


def add_foreign_heads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-foreign-heads", action="store_true",
                        help="use the heads of a locate run made on another model (other config or weights) or for "
                             "another function, deliberately (a transfer); recorded. Another head geometry is "
                             "always refused")


def heads_fit(located, args, function: str | None) -> dict[str, str]:
    """Refuse, before the model loads, a locate run whose heads are not ``args.model``'s for ``function``
    (``HeadScores.foreign_to``: another model's files, another function; another geometry always);
    ``--allow-foreign-heads`` accepts the first two, each said in a warning line. Returns what was accepted
    (``{kind: reason}``), for the run's metadata."""
    from vlmheads.models.identity import declared_geometry, source_identity
    from vlmheads.models.loading import check_model_source

    source = check_model_source(args.model)
    reasons = located.foreign_to(args.model, files=source_identity(source), function=function,
                                 geometry=declared_geometry(source))
    if "geometry" in reasons:
        raise UsageError(f"{reasons['geometry']}: locate heads on this model first")
    if reasons and not getattr(args, "allow_foreign_heads", False):
        first = next(iter(reasons.values()))
        raise UsageError(f"{first}: locate heads on this model{' and function' if 'function' in reasons else ''} "
                         f"first, or pass --allow-foreign-heads to use them deliberately (recorded)")
    for reason in reasons.values():
        print(f"warning: --allow-foreign-heads: {reason}", file=sys.stderr)
    if located.format < 2 and "model" not in reasons:
        print(f"warning: the locate run {located.run_dir} records no model files (heads.json format "
              f"{located.format}): only its model's name and head geometry were checked", file=sys.stderr)
    return reasons


def _bad_input_types() -> tuple[type, ...]:
    """What a command turns into one line and exit 2: bad input (``UsageError``, the library's ``UserError``),
    and nothing broader: a bug (a ``KeyError`` deep in a method) keeps its traceback. Imported here, not at
    the top: the library imports torch, and Ctrl-C during that import must stay one line."""
    from vlmheads.errors import UserError

    return (UsageError, UserError)


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ({'; '.join(lines[1:4])}{'; ...' if len(lines) > 4 else ''})"


def run_command(body: Callable[[argparse.Namespace], int],
                parser: argparse.ArgumentParser | Callable[[], argparse.ArgumentParser],
                argv: Sequence[str] | None, parallel_ok: bool = False) -> int:
    """Parse ``argv`` and run ``body(args)``: bad input -> one line + 2; Ctrl-C -> one line + 130.
    ``parser`` may be the function that builds it: its imports (torch, transformers) then run inside the
    guard too, so Ctrl-C while the command is still importing is one line, not a traceback.

    Started by a launcher (torchrun, accelerate launch: ``vlmheads.parallel``), a command that is
    ``parallel_ok`` joins the process group first; ranks other than 0 print nothing on stdout. A failed
    rank ends every rank with one line naming it and exit status 1. A command that is not refuses to run
    as several processes (each would do all the work and write the same files)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ctrl_c = _CtrlC()
    started = None
    try:
        if callable(parser):
            parser = parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help, or argparse's own exit
            return int(exit_.code or 0)
        args.argv = argv
        started = _join(parser.prog, parallel_ok, args)
        return body(args)
    except KeyboardInterrupt:
        print(_interrupted_line(args if "args" in locals() else None), file=sys.stderr)
        return 130
    except Exception as err:
        if ctrl_c.pressed:  # Ctrl-C inside a library that turned it into its own error (transformers' lazy
            print(_interrupted_line(args if "args" in locals() else None), file=sys.stderr)  # imports do)
            return 130
        if isinstance(err, _bad_input_types()):
            print(f"error: {_one_line(err)}", file=sys.stderr)
            return 2
        from vlmheads.parallel import CollectiveFailed, RankFailed

        if isinstance(err, (RankFailed, CollectiveFailed)):
            print(f"error: {_one_line(err)}", file=sys.stderr)
            return 1
        raise
    finally:
        ctrl_c.restore()
        if started is not None:
            _leave(started)


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    """--shard and --shard-job: one job of a job array (torchrun and accelerate launch need no option)."""
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run as shard I (from 0) of N jobs started separately (a SLURM array: --shard "
                             "$SLURM_ARRAY_TASK_ID/N); all N share --out and meet in its shards/ folder, must run at "
                             "the same time, and shard 0 writes the outputs, the same as one process would")
    parser.add_argument("--shard-job", default=None, metavar="ID",
                        help="names one attempt of a sharded run (default: $SLURM_ARRAY_JOB_ID, else 0); a new "
                             "attempt into the same directory (--resume) needs a new one")


def _shard_dir(args) -> Path:
    """``RUN_DIR/shards/JOB``: where the shards of one attempt meet."""
    where = getattr(args, "resume", None) or getattr(args, "out", None)
    if not where:
        raise UsageError(f"--shard {args.shard} needs --out RUN_DIR (the same for every shard: they meet in it)")
    job = args.shard_job or os.environ.get("SLURM_ARRAY_JOB_ID") or "0"
    if not job.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"--shard-job {job!r}: use letters, digits, - and _ only")
    return Path(where) / "shards" / job


def _join(prog: str, parallel_ok: bool, args=None):
    """Join the launcher's process group or the shards' folder (``parallel.start``); None in a world of
    one. Ranks other than 0 write their stdout to nowhere (their stderr stays: warnings and tracebacks)."""
    from vlmheads import parallel

    shard = getattr(args, "shard", None)
    if getattr(args, "shard_job", None) and not shard:
        raise UsageError("--shard-job names one attempt of a sharded run: add --shard I/N, or drop it")
    found = parallel.shard_world(shard, Path("."), {}) if shard else parallel.from_environment()
    if found.size == 1 and not shard:
        return None
    if not parallel_ok:
        raise UsageError(f"{prog} runs as one process, and this is process {found.rank} of {found.size} "
                         f"({found.launcher}): start it without torchrun / accelerate launch")
    world = parallel.start(shard=shard, shard_dir=_shard_dir(args) if shard else None)
    saved = sys.stdout
    if not world.main:
        sys.stdout = open(os.devnull, "w")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # one "Loading weights" bar, rank 0's
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return saved


def _leave(stdout) -> None:
    from vlmheads import parallel

    if sys.stdout is not stdout:
        sys.stdout.close()
        sys.stdout = stdout
    parallel.stop()


class _CtrlC:
    """SIGINT noted before it is raised as KeyboardInterrupt: a library that catches the interrupt and raises
    something else (transformers, importing a model class lazily, re-raises it as ModuleNotFoundError, or
    loses it in a RecursionError) still ends as Ctrl-C: one line and exit status 130."""

    def __init__(self):
        import signal
        import threading

        self.pressed, self._previous = False, None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._note)

    def _note(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _interrupted_line(args) -> str:
    """What Ctrl-C kept, and how to go on."""
    where = getattr(args, "run_dir", None)
    if not where or not Path(where).is_dir():
        return "interrupted: stopped before a run directory was made; nothing to keep"
    stages = sorted(Path(where, "stages").glob("*.pt"))
    kept = f"{len(stages)} finished stage(s) kept in {where}/stages" if stages else f"{where} keeps its config and metadata"
    hint = getattr(args, "resume_hint", None)
    then = f"; continue with: {hint}" if hint and stages else "; re-run the command to redo it"
    return f"interrupted: {kept} (metadata.json status: interrupted){then}"
