"""python -m heads.flow --function relational: where the relation lives and how it reaches the answer.

Attention knockout by edge class (image->answer, image->question, question->answer, object->answer,
background->answer) in sliding windows of decoder layers, and linear probes for the relation through
every layer of the vision encoder and the decoder. Writes knockout.csv and probes.csv.

Each knockout cell, the probes, each batch's rollout and the attention maps are saved in RUN/stages as
they finish; ``--resume RUN`` continues an interrupted run from there with its own config.
"""

from __future__ import annotations

import sys
from typing import Sequence

from heads import _cli


def _parser():
    from vlmheads.flow import EDGES
    from vlmheads.flow.run import FlowConfig

    default = _cli.defaults(FlowConfig)
    p = _cli.command_parser("python -m heads.flow", __doc__)
    _cli.add_data_options(p, function="relational", n=default["n"], n_min=1)
    _cli.add_model_options(p)
    p.add_argument("--edges", type=_cli.comma_list, default=",".join(EDGES), help=f"comma list from {','.join(EDGES)}")
    p.add_argument("--window", type=_cli.positive(), default=None,
                   help="decoder layers per knockout window (default: a quarter of the layers)")
    p.add_argument("--no-probes", action="store_true", help="knockout only")
    p.add_argument("--no-rollout", action="store_true",
                   help="skip attention rollout and per-patch knockout (a pass per image patch: 576 for LLaVA-1.5)")
    p.add_argument("--heads-from", default=None, metavar="RUN",
                   help="locate run whose selected heads are drawn on the images (default: the newest locate run "
                        "for this model and function, if any); a run of another model is refused, a run of another "
                        "function is drawn with a note")
    _cli.add_foreign_heads_option(p)
    _cli.add_run_options(p, batch_size=default["batch_size"])
    _cli.add_parallel_options(p)
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run in RUN_DIR with its own config (other options are ignored); "
                        "finished stages are loaded, not re-run")
    return p


def _located_heads(args, function: str):
    """``(heads, run, geometry, foreign)`` from --heads-from, else from the newest locate run for this model
    and function (none: no heads); refused before the model loads when they are not this model's heads
    (``_cli.heads_fit``; ``foreign``: what --allow-foreign-heads accepted). The heads are only drawn, so an
    explicit run of another function (spatial heads on relational questions) is taken, with a note."""
    from pathlib import Path

    from vlmheads.scores import HeadScores, newest_locate_run

    if args.heads_from:
        run = Path(args.heads_from)
    else:
        run = newest_locate_run(args.model, function, warn=lambda s: print(s, file=sys.stderr))
        if run is None:
            return (), None, None, {}
    located = HeadScores.load(run)
    foreign = _cli.heads_fit(located, args, None if args.heads_from else function)
    if located.function != function:
        print(f"note: drawing {located.function} heads from {run} on {function} questions", file=sys.stderr)
    return tuple(located.selected), str(run), located.geometry, foreign


def _run(args) -> int:
    import shutil
    from pathlib import Path

    from vlmheads.data import canonical_function
    from vlmheads.flow.run import FlowConfig, flow_examples, report_lines, run_flow, write_outputs
    from vlmheads.models.spec import ModelSpec

    resume = Path(args.resume) if args.resume else None
    if resume is not None:
        config, previous = _cli.resumed_config(resume, "flow", "a flow run", FlowConfig)
        spec = ModelSpec.of(config).resumed(previous)  # the run's own model options, never the command line's
        args.out, geometry, foreign = None, None, {}
        heads_from = config.heads_from
    else:
        previous = None
        _cli.refuse_unused(args, {"data_root": _cli.data_root_used([args.dataset])})
        heads, heads_from, geometry, foreign = _located_heads(args, canonical_function(args.function))
        config = _cli.config_from(FlowConfig, args, probes=not args.no_probes, rollout=not args.no_rollout,
                                  heads=heads, heads_from=heads_from, allow_foreign_heads=bool(foreign))
        spec = ModelSpec.of(config)
    _cli.check_model_options(args, spec)
    declared = spec.declared_geometry()
    if declared and config.window is not None and config.window > declared[0]:
        raise _cli.UsageError(f"--window {config.window} is more than the model's {declared[0]} layers")
    examples = flow_examples(config)
    loaded = _cli.load(args, spec)
    if config.window is not None and config.window > loaded.geometry.n_layers:
        raise _cli.UsageError(f"--window {config.window} is more than the model's {loaded.geometry.n_layers} layers")
    g = loaded.geometry
    if geometry and (geometry.get("n_layers"), geometry.get("n_heads")) != (g.n_layers, g.n_heads):
        raise _cli.UsageError(f"the locate run {heads_from} was made on a model with {geometry.get('n_layers')} x "
                              f"{geometry.get('n_heads')} heads, but {loaded.name} has {g.n_layers} x {g.n_heads}: "
                              f"locate heads on this model first")
    directory = _cli.existing_directory(resume, "flow") if resume else \
        _cli.run_directory("flow", f"{config.function}-{loaded.name.split('/')[-1]}", args.out)
    with directory as run_dir:
        args.run_dir = run_dir
        args.resume_hint = f"python -m heads.flow --resume {run_dir}"
        print(f"run directory: {run_dir}" + (" (resumed)" if resume else ""))
        extra = {"resumed": _cli.resumed_from(previous)} if previous else {}
        with _cli.run_record(run_dir, "flow", config.to_dict(), argv=args.argv, seed=config.seed,
                             threads=args.threads_choice, model=loaded.identity(),
                             dataset={"name": config.dataset, "root": config.data_root, "n": len(examples),
                                      "function": config.function},
                             **({"foreign_heads": foreign} if foreign else {}), **extra) as record:
            result = run_flow(loaded, config, examples, log=lambda s: print(s, flush=True), progress=True,
                              stages_dir=run_dir / "stages")
            for stage, seconds in result.timings.items():
                record.time(stage, seconds)
            record.meta["notes"] = result.notes
            record.meta["rollout_agreement"] = {k: v for k, v in result.rollout.items() if k.startswith("spearman")}
            if result.resumed:
                record.meta["resumed_stages"] = result.resumed
            with record.writing_outputs(f"continue with: python -m heads.flow --resume {run_dir}"):
                _cli.main_only(lambda: write_outputs(
                    result, run_dir, title=f"{loaded.name}: where the {config.function} answer comes from"))
        _cli.main_only(lambda: shutil.rmtree(run_dir / "stages", ignore_errors=True))  # the outputs hold every stage
    print("\n".join(report_lines(result)))
    print(f"\nwrote {run_dir}/knockout.csv" + (", probes.csv" if result.probes else "")
          + (", rollout.csv" if result.rollout else "") + ", flow.html")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _cli.run_command(_run, _parser, argv, parallel_ok=True)


if __name__ == "__main__":
    sys.exit(main())
