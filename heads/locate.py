"""python -m heads.locate --function spatial: which heads carry one cognitive function?"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from heads import _cli


def _parser():
    from vlmheads.locate import DEFAULT_METHODS, LOCATE_METHODS, SCREEN_ABOVE, SCREENS, LocateConfig
    from vlmheads.methods.batches import METRICS
    from vlmheads.site import ABLATIONS

    default = _cli.defaults(LocateConfig)  # the options' defaults and choices are the library's own
    p = _cli.command_parser("python -m heads.locate", __doc__)
    _cli.add_data_options(p, function="spatial", n=default["n"], n_min=1)
    _cli.add_model_options(p)
    p.add_argument("--target", default="function", choices=("function", "prior"),
                   help="function (default): the heads that carry --function; prior: the heads whose ablation "
                        "turns prior-driven answers (examples the prior and the image disagree on) into grounded "
                        "ones, against the grounded answers it breaks (--methods ablation,prior,dla, --select-by "
                        "prior_net and --function relational unless given)")
    p.add_argument("--methods", type=_cli.comma_list, default=",".join(DEFAULT_METHODS),
                   help=f"comma list from {','.join(LOCATE_METHODS)} (default: all but redundancy and dla, which are opt-in)")
    p.add_argument("--ablation", default=default["ablation"], choices=ABLATIONS)
    p.add_argument("--metric", default=default["metric"], choices=METRICS)
    p.add_argument("--select-by", default=default["select_by"],
                   choices=tuple(s for method in LOCATE_METHODS.values() for s in method.selectable))
    p.add_argument("--top-k", type=_cli.positive(), default=None, help="number of heads to select (default: elbow)")
    p.add_argument("--random-draws", type=_cli.positive(), default=default["random_draws"],
                   help=f"random head sets in the ablation check (default {default['random_draws']})")
    p.add_argument("--screen", default=default["screen"], choices=SCREENS,
                   help=f"ablation as screen + verify: an attribution estimate of every head, exact ablation of the "
                        f"top --verify only (auto: when the model has more than {SCREEN_ABOVE} heads; off: all heads "
                        f"exact)")
    p.add_argument("--verify", type=_cli.positive(), default=default["verify"],
                   help=f"heads the exact ablation verifies after the screen (default {default['verify']})")
    _cli.add_run_options(p, batch_size=default["batch_size"])
    _cli.add_parallel_options(p)
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run in RUN_DIR with its own config (other options are ignored); "
                        "finished stages are loaded, not re-run")
    return p


PRIOR_TARGET = {"methods": ("ablation", "prior", "dla"), "select_by": "prior_net", "function": "relational"}


def _config(args):
    from vlmheads.locate import LocateConfig

    if getattr(args, "target", "function") == "prior":  # --target prior: its defaults, where not given
        for dest, value in PRIOR_TARGET.items():
            if dest not in getattr(args, "given", ()):
                setattr(args, dest, value)
    return _cli.config_from(LocateConfig, args)


def _run(args) -> int:
    import shutil

    from vlmheads.locate import examples_by_function, report_lines, run_locate, write_outputs
    from vlmheads.models.spec import ModelSpec

    resume = Path(args.resume) if args.resume else None
    if resume is not None:
        from vlmheads.locate import LocateConfig

        config, previous = _cli.resumed_config(resume, "locate", "a locate run", LocateConfig)
        spec = ModelSpec.of(config).resumed(previous)  # the run's own model options, never the command line's
        args.out = None
    else:
        config, previous = _config(args), None
        spec = ModelSpec.of(config)
        no_ablation = f"--methods has no ablation (now {','.join(config.methods)})"
        _cli.refuse_unused(args, {
            "screen": ("ablation" in config.methods, f"the screen is the ablation method's, and {no_ablation}"),
            "verify": ("ablation" in config.methods and config.screen != "off",
                       f"it sets how many heads ablation verifies after its screen, and "
                       f"{'--screen is off' if 'ablation' in config.methods else no_ablation}"),
            "data_root": _cli.data_root_used([config.dataset])})
    _cli.check_model_options(args, spec)
    declared = spec.declared_geometry()
    if declared and config.top_k is not None and config.top_k > declared[0] * declared[1]:
        raise _cli.UsageError(f"--top-k {config.top_k} is larger than the number of heads: {spec.model} has "
                              f"{declared[0] * declared[1]} ({declared[0]} layers x {declared[1]}); choose "
                              f"1..{declared[0] * declared[1]}")
    examples = examples_by_function(config)
    if config.select_by.startswith("prior"):
        from vlmheads.methods.prior import prior_split

        violating, grounded = prior_split(examples[config.function])
        if not violating or not grounded:
            raise _cli.UsageError(f"--select-by {config.select_by} needs {config.function} examples the prior and "
                                  f"the image disagree on and others (meta['prior'], as the organism's datasets "
                                  f"have); {config.dataset} has {len(violating)} and {len(grounded)}")
    loaded = _cli.load(args, spec)
    g = loaded.geometry
    if config.top_k is not None and config.top_k > g.n_total:
        raise _cli.UsageError(f"--top-k {config.top_k} is larger than the number of heads: {loaded.name} has "
                              f"{g.n_total} ({g.n_layers} layers x {g.n_heads}); choose 1..{g.n_total}")
    directory = _cli.existing_directory(resume, "locate") if resume else \
        _cli.run_directory("locate", f"{config.function}-{loaded.name.split('/')[-1]}", args.out)
    with directory as run_dir:
        args.run_dir = run_dir
        args.resume_hint = f"python -m heads.locate --resume {run_dir}"
        print(f"run directory: {run_dir}" + (" (resumed)" if resume else ""))
        extra = {"resumed": _cli.resumed_from(previous)} if previous else {}
        # a failed run keeps its directory, with metadata.json saying why
        with _cli.run_record(run_dir, "locate", config.to_dict(), argv=args.argv, seed=config.seed,
                             threads=args.threads_choice, model=loaded.identity(),
                             dataset={"name": config.dataset, "root": config.data_root, "n_per_function": config.n},
                             **extra) as record:
            result = run_locate(loaded, config, log=lambda s: print(s, flush=True), examples=examples,
                                stages_dir=run_dir / "stages", progress=True)
            for stage, seconds in result.timings.items():
                record.time(stage, seconds)
            record.meta["selected"] = [list(h) for h in result.selected]
            with record.writing_outputs(f"continue with: python -m heads.locate --resume {run_dir}"):
                _cli.main_only(lambda: write_outputs(result, run_dir))
        _cli.main_only(lambda: shutil.rmtree(run_dir / "stages", ignore_errors=True))  # the outputs hold every stage
    print("\n".join(report_lines(result)))
    print(f"\nwrote {run_dir}/scores.csv, heads.json, headmap.html")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _cli.run_command(_run, _parser, argv, parallel_ok=True)


if __name__ == "__main__":
    sys.exit(main())
