"""python -m heads.intervene --emphasize top-k: act on located heads; compare with ScalingVis/AdaptVis.

Heads come from a locate run (--heads-from RUN, default: the newest for this model and function).
``top-k`` means the heads that run selected; ``top-K`` (a number) the K best of its ranking.
--emphasize and --ablate set the head count of those two methods; the other head methods use
--heads (default top-k).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

from heads import _cli


def _parser():
    from vlmheads.data.option_order import SCHEMES
    from vlmheads.intervene import INTERVENE_METHODS, METHODS, InterveneConfig

    p = _cli.command_parser("python -m heads.intervene", __doc__)
    _cli.add_model_options(p)
    p.add_argument("--dataset", action="append", default=None,
                   help="dataset name, repeatable (default: organism:controlled and organism:vsr)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--method", action="append", default=None, help=f"repeatable; from {', '.join(INTERVENE_METHODS)} (default: all but the opt-in "
                        f"{', '.join(m for m in INTERVENE_METHODS if m not in METHODS)})")
    p.add_argument("--heads-from", default=None, help="locate run directory (default: newest for this model/function)")
    p.add_argument("--function", default=None,
                   help="function whose heads to use (default: the --heads-from run's; spatial when picking the "
                        "newest locate run); a run for another function is refused")
    _cli.add_foreign_heads_option(p)
    p.add_argument("--heads", default="top-k", metavar="top-K",
                   help="heads of the head methods: top-k (the locate run's selection, default) or top-K")
    p.add_argument("--emphasize", default=None, metavar="top-K", help="emphasise these located heads (top-k or top-K)")
    p.add_argument("--ablate", default=None, metavar="top-K", help="ablate these located heads (top-k or top-K)")
    p.add_argument("--n", type=_cli.positive(), default=None,
                   help="at most N examples of each split (default: the protocol's splits, 80 + 320 of 400 for the "
                        "organism); for smoke runs of big models")
    p.add_argument("--random-heads", type=_cli.positive(0), default=0, metavar="N",
                   help="the control of every head method: the same method with its chosen parameters on N draws "
                        "of as many random (not located) heads, reported as 'METHOD (random heads)' rows (default 0)")
    p.add_argument("--random-attention", type=_cli.positive(0), default=0, metavar="N",
                   help="the control of every attention-scaling method (scalingvis, adaptvis, head_adaptvis, "
                        "head_scalingvis): its image-key logits scaled instead by N draws of seeded random factors "
                        "as far from 1 as its chosen alpha, 'METHOD (random attention)' rows (default 0)")
    p.add_argument("--blind", action="store_true",
                   help="the blind baseline: the unmodified model with every image replaced by a uniform grey one, "
                        "a 'none (blind)' row (needs the method none)")
    p.add_argument("--option-orders", choices=SCHEMES, default=None,
                   help="option-order robustness of every method: the options listed in the prompt in every "
                        "cyclic shift (circular) or every permutation (all); an example counts only when it is "
                        "right in all of them, 'METHOD (option orders)' rows (default: off)")
    p.add_argument("--sweep", action="store_true",
                   help="tune alpha / threshold / gamma (and k) on the validation split (default: published defaults)")
    _cli.add_run_options(p, batch_size=_cli.defaults(InterveneConfig)["batch_size"])
    _cli.add_parallel_options(p)
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run in RUN_DIR with its own config (other options are ignored); "
                        "finished methods are loaded, not re-run")
    return p


def parse_top(spec: str | None, option: str) -> int | None:
    """``top-k`` -> None (the locate run's selection); ``top-K``/``K`` -> K; else a UsageError."""
    if spec is None:
        return None
    text = spec.strip().lower()
    if text in ("top-k", "topk", "k"):
        return None
    m = re.fullmatch(r"(?:top-?)?(\d+)", text)
    if not m or int(m.group(1)) < 1:
        raise _cli.UsageError(f"{option} expects top-k (the heads the locate run selected) or top-K with K >= 1 "
                              f"(e.g. top-3), got {spec!r}")
    return int(m.group(1))


class NoLocateRun(_cli.UsageError, FileNotFoundError):
    """No locate run for this model and function under the results folder."""


def newest_locate_run(model: str, function: str, root: Path | None = None) -> Path:
    """``vlmheads.scores.newest_locate_run``, refused with the fix when there is none."""
    from vlmheads.data import canonical_function
    from vlmheads.runs import DEFAULT_RESULTS
    from vlmheads.scores import newest_locate_run as newest

    run = newest(model, function, root, warn=lambda s: print(s, file=sys.stderr))
    if run is None:
        function = canonical_function(function)
        raise NoLocateRun(f"no locate run for model {model!r} and function {function!r} under "
                          f"{root or DEFAULT_RESULTS / 'locate'}; run `python -m heads.locate --function {function}` "
                          f"first or pass --heads-from RUN")
    return run


def _head_methods_without_a_run(args, methods: tuple, k_own: dict) -> tuple[tuple, dict]:
    """No locate run for this model and function: ``(methods to run, {method: why skipped})``. Head methods
    that were asked for by name (``--method``, ``--emphasize``, ``--ablate``) are refused instead."""
    from vlmheads.intervene import INTERVENE_METHODS

    heads_methods = [m for m in methods if INTERVENE_METHODS[m].uses_heads]
    asked = [m for m in heads_methods if args.method is not None or m in k_own]
    if asked:
        raise NoLocateRun(f"{', '.join(asked)} {'acts' if len(asked) == 1 else 'act'} on located heads, but there is no locate run for model "
                                f"{args.model!r} and function {args.function!r}: run `python -m heads.locate "
                                f"--model {args.model} --function {args.function}` first, pass --heads-from RUN, "
                                f"or ask only for head-free methods (none, scalingvis, adaptvis, visionboost)")
    why = (f"no locate run for model {args.model!r} and function {args.function!r} (run `python -m heads.locate` "
           f"or pass --heads-from RUN)")
    return tuple(m for m in methods if m not in heads_methods), {m: why for m in heads_methods}


def _run(args) -> int:
    if args.resume:
        return _resume(args, Path(args.resume))
    from vlmheads.data import canonical_function
    from vlmheads.intervene import INTERVENE_METHODS, METHODS, InterveneConfig, load_datasets
    from vlmheads.scores import HeadScores

    methods = tuple(args.method or METHODS)
    for m in methods:
        INTERVENE_METHODS[m]  # an unknown name is refused before anything else
    asked_function = canonical_function(args.function) if args.function is not None else None
    args.function = args.function or "spatial"
    k_default = parse_top(args.heads, "--heads")
    k_own = {m: parse_top(spec, f"--{m}") for m, spec in (("emphasize", args.emphasize), ("ablate", args.ablate))
             if spec is not None}
    head_methods = [m for m in methods if INTERVENE_METHODS[m].uses_heads]
    run_list = f"the methods run are {', '.join(methods)}"
    no_heads = f"no method run acts on located heads ({run_list})"
    _cli.refuse_unused(args, {
        "emphasize": ("emphasize" in methods, f"emphasize is not among the methods ({run_list})"),
        "ablate": ("ablate" in methods, f"ablate is not among the methods ({run_list})"),
        "heads": (any(m not in k_own for m in head_methods),
                  no_heads if not head_methods else f"every head method run has its own head count "
                                                    f"({', '.join(f'--{m}' for m in k_own)})"),
        "heads_from": (bool(head_methods), no_heads), "function": (bool(head_methods), no_heads),
        "random_heads": (bool(head_methods), no_heads),
        "random_attention": (any(INTERVENE_METHODS[m].scales_attention for m in methods),
                             f"no method run scales attention logits ({run_list})"),
        "blind": ("none" in methods, f"the blind baseline is the unmodified model, and none is not among the "
                                     f"methods ({run_list}); add --method none"),
        "data_root": _cli.data_root_used(args.dataset or InterveneConfig.datasets)})
    spec = _cli.check_model_options(args)
    # head-free methods (none, ScalingVis, AdaptVis, VisionBoost) need no locate run at all
    wants_heads = any(INTERVENE_METHODS[m].uses_heads for m in methods) or args.heads_from or k_own
    run, skipped = None, {}
    if wants_heads:
        try:
            run = Path(args.heads_from) if args.heads_from else newest_locate_run(args.model, args.function)
        except NoLocateRun:
            methods, skipped = _head_methods_without_a_run(args, methods, k_own)
            print(f"warning: skipping the head methods {', '.join(skipped)}: {next(iter(skipped.values()))}",
                  file=sys.stderr)
    foreign: dict = {}
    if run is not None:
        located = HeadScores.load(run)
        foreign = _cli.heads_fit(located, args, asked_function if args.heads_from else canonical_function(args.function))
        order, heads = tuple(located.ranking()), tuple(located.top(k_default))
        k_by_method = tuple((m, k if k is not None else len(located.selected)) for m, k in k_own.items())
    else:
        located, order, heads, k_by_method = None, (), (), ()
    config = _cli.config_from(InterveneConfig, args, spec, datasets=tuple(args.dataset or InterveneConfig.datasets),
                              methods=methods, heads=heads, heads_from=str(run) if run else None,
                              k=len(heads) if run else None, k_by_method=k_by_method, ranking=order,
                              allow_foreign_heads=bool(foreign))
    data = load_datasets(config)
    loaded = _cli.load(args, spec)
    g = loaded.geometry
    if located is None:
        print("heads: none (head-free methods only: " + ", ".join(methods) + ")")
        return _execute(args, config, data, loaded, _cli.run_directory("intervene", "head-free", args.out), None,
                        skipped=skipped)
    if (located.geometry.get("n_layers"), located.geometry.get("n_heads")) != (g.n_layers, g.n_heads):
        raise _cli.UsageError(f"the locate run {run} was made on a model with {located.geometry.get('n_layers')} x "
                              f"{located.geometry.get('n_heads')} heads, but {loaded.name} has {g.n_layers} x "
                              f"{g.n_heads}: locate heads on this model first")
    k_label = "-".join(f"{m}{k}" for m, k in k_by_method) or f"top{len(heads)}"
    locate_run = {"path": str(run), "function": located.function, "select_by": located.select_by, "k": len(heads),
                  "heads": [list(h) for h in heads], "k_by_method": dict(k_by_method), "model": located.model,
                  "model_files": located.model_files, "format": located.format,
                  **({"foreign": foreign} if foreign else {})}
    print(f"heads (top {len(heads)} by {located.select_by} for {located.function}, from {run}): "
          + ", ".join(f"L{l}H{h}" for l, h in heads) + "".join(f"; {m}: top {k}" for m, k in k_by_method))
    directory = _cli.run_directory("intervene", f"{located.function}-{k_label}", args.out)
    return _execute(args, config, data, loaded, directory, locate_run)


def _resume(args, run_dir: Path) -> int:
    """--resume: the run's own config; finished stages are loaded from its stages/ folder."""
    from vlmheads.intervene import load_datasets

    from vlmheads.intervene import InterveneConfig

    from vlmheads.models.spec import ModelSpec

    config, previous = _cli.resumed_config(run_dir, "intervene", "an intervene run", InterveneConfig)
    spec = _cli.check_model_options(args, ModelSpec.of(config).resumed(previous))  # the run's own, not argv's
    data = load_datasets(config)
    loaded = _cli.load(args, spec)
    return _execute(args, config, data, loaded, _cli.existing_directory(run_dir, "intervene"),
                    previous.get("locate_run"), resumed=_cli.resumed_from(previous))


def _execute(args, config, data, loaded, directory, locate_run: dict | None, resumed: dict | None = None,
             skipped: dict | None = None) -> int:
    """Run every method into the run directory (stages saved as they finish), then write the outputs."""
    import shutil

    from vlmheads.intervene import run_intervene, table_lines, write_outputs

    with directory as run_dir:
        args.run_dir = run_dir
        args.resume_hint = f"python -m heads.intervene --resume {run_dir}"
        print(f"run directory: {run_dir}" + (" (resumed)" if resumed else ""))
        extra = {"resumed": resumed} if resumed else {}
        # a failed or interrupted run keeps its directory, its finished stages and metadata.json saying why
        with _cli.run_record(run_dir, "intervene", config.to_dict(), argv=args.argv, seed=config.seed,
                             threads=args.threads_choice, model=loaded.identity(), locate_run=locate_run,
                             dataset={"names": list(config.datasets), "root": config.data_root}, **extra) as record:
            result = run_intervene(loaded, config, log=lambda s: print(s, flush=True), data=data, progress=True,
                                   stages_dir=run_dir / "stages")
            for stage, seconds in result.timings.items():
                record.time(stage, seconds)
            record.meta["layout_probe_accuracy"] = result.probe_accuracy
            if result.controls:
                record.meta["controls"] = result.controls  # per control row: the heads, seeds or orders it drew
            result.skipped.update(skipped or {})
            record.meta["skipped"] = result.skipped
            record.meta["dataset"]["identity"] = result.datasets
            if result.resumed:
                record.meta["resumed_stages"] = result.resumed
            with record.writing_outputs(f"continue with: python -m heads.intervene --resume {run_dir}"):
                _cli.main_only(lambda: write_outputs(result, run_dir))
        _cli.main_only(lambda: shutil.rmtree(run_dir / "stages", ignore_errors=True))  # the outputs hold every stage
    print("\n" + "\n".join(table_lines(result, ("all", "prior=consistent", "prior=violating"))))
    by_reason: dict[str, list[str]] = {}
    for what, why in result.skipped.items():
        by_reason.setdefault(why, []).append(what)
    for why, what in by_reason.items():
        print(f"skipped {', '.join(what)}: {why}")
    print(f"\nwrote {run_dir}/results.csv, interventions.json, samples.jsonl, comparison.html")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _cli.run_command(_run, _parser, argv, parallel_ok=True)


if __name__ == "__main__":
    sys.exit(main())
