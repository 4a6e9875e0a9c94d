"""python -m heads.organism train|eval|twin: retrain or evaluate the model organism, or run the twin test.

    python -m heads.organism eval                       # the shipped organism on fresh held-out scenes
    python -m heads.organism eval --model DIR           # any saved organism-format model
    python -m heads.organism train                      # seeded retraining (~23 min on 2 cores)
    python -m heads.organism train --install            # ... and replace organism-competent's weights
    python -m heads.organism train --recipe prior       # fine-tune organism-competent on a strong prior
    python -m heads.organism train --recipe setting-base    # organism-competent onto 81-token images
    python -m heads.organism train --recipe setting --init RUN/model --install   # the default organism
    python -m heads.organism train --resume RUN         # continue an interrupted run from its checkpoint
    python -m heads.organism train --micro              # a few steps of a micro model (checks the loop)
    python -m heads.organism twin                       # the prior-head finder on the prior organism and
                                                        # its prior-free twin (vlmheads.methods.twin)

Each run writes config.json + metadata.json into its run directory (results/organism/<run_id>/).
Training saves the model there; only ``--install`` copies it over the shipped organism, after the
run has finished, so an interrupted run never damages it.
"""

from __future__ import annotations

import sys
from typing import Sequence

from heads import _cli


def _parser():
    from vlmheads.organism.train import RECIPES

    parser = _cli.command_parser("python -m heads.organism", __doc__)
    sub = parser.add_subparsers(dest="action", metavar="{train,eval,twin}", required=True,
                                parser_class=_cli._Parser)
    train = sub.add_parser("train", help="train the organism (a recipe: from scratch, or fine-tuning a saved one)")
    train.add_argument("--recipe", choices=tuple(RECIPES), default="competent",
                       help="competent: the clean organism from scratch (default); prior: fine-tune organism-competent "
                            "on a strong prior and weakened images; setting-base: carry organism-competent onto "
                            "9x9-patch images; setting: fine-tune a setting-base run (--init) like prior")
    train.add_argument("--init", default=None, help="start from this saved organism (default: the recipe's)")
    train.add_argument("--resume", default=None, metavar="RUN",
                       help="continue an interrupted train run from its checkpoint (its own config)")
    train.add_argument("--steps", type=_cli.positive(), default=None,
                       help="training steps (default: the recipe's)")
    train.add_argument("--checkpoint-every", type=_cli.positive(), default=None,
                       help="steps between checkpoints (default 1000)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--micro", action="store_true", help="a few steps of a micro model: checks the loop only")
    train.add_argument("--install", action="store_true",
                       help="copy the trained model over the shipped organism of its recipe (competent: "
                            "organism-competent; setting: the default organism)")
    train.add_argument("--out", default=None, help="run directory (default: results/organism/<run_id>)")
    ev = sub.add_parser("eval", help="accuracy per function on fresh held-out scenes")
    _cli.add_model_options(ev)
    ev.add_argument("--n", type=_cli.positive(), default=None, help="examples per function (default 1200)")
    ev.add_argument("--generate", type=_cli.positive(0), default=None,
                    help="examples per function for the generation check (default 48; 0 skips it)")
    ev.add_argument("--batch-size", type=_cli.positive(), default=None, help="default 64")
    ev.add_argument("--seed", type=int, default=None, help="scene seed (default 20000, never used in training)")
    ev.add_argument("--out", default=None, help="run directory (default: results/organism/<run_id>)")
    twin = sub.add_parser("twin", help="locate prior heads by margin on one set of scenes and zero them at the "
                                       "answer position on another, on both twins, beside random heads")
    twin.add_argument("--models", type=_cli.comma_list, default=("organism", "organism-competent"),
                      help="the model with the prior, then its prior-free twin (default organism,organism-competent)")
    twin.add_argument("--n", type=_cli.positive(), default=320, help="scenes per set (default 320)")
    twin.add_argument("--k", type=_cli.positive(), default=1, help="heads to zero (default 1: the best)")
    twin.add_argument("--draws", type=_cli.positive(), default=5, help="random head sets (default 5)")
    twin.add_argument("--locate-seed", type=int, default=1, help="scene seed of the locating set (default 1)")
    twin.add_argument("--seed", type=int, default=0, help="scene seed of the applying set, and the draws' (default 0)")
    twin.add_argument("--batch-size", type=_cli.positive(), default=64)
    twin.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    twin.add_argument("--out", default=None, help="run directory (default: results/organism/<run_id>)")
    return parser


def _train(args) -> int:
    import shutil
    from dataclasses import replace

    from vlmheads.models.loading import check_model_source, organism_path
    from vlmheads.organism.build import MICRO_ARCH
    from vlmheads.organism.train import INSTALLS, MICRO_CONFIG, NEEDS_INIT, RECIPES, train
    from vlmheads.runs import RunRecord

    if args.install and args.micro:
        raise _cli.UsageError("--install with --micro would replace the shipped organism with an untrained micro "
                              "model; drop --install")
    if args.install and args.recipe not in INSTALLS:
        shipped = ", ".join(f"{r} -> {name}" for r, name in INSTALLS.items())
        raise _cli.UsageError(f"--install: the {args.recipe} recipe makes no shipped organism ({shipped}); "
                              f"drop --install")
    if args.resume is not None:
        return _resume_training(args)
    recipe = RECIPES[args.recipe]
    if args.recipe in NEEDS_INIT and args.init is None:
        raise _cli.UsageError(f"--recipe {args.recipe} fine-tunes the model of a {NEEDS_INIT[args.recipe]} run: pass "
                              f"--init results/organism/<that run>/model")
    geometry = {"image_size": recipe.arch.image_size, "patch_size": recipe.arch.patch_size}
    config = replace(MICRO_CONFIG, init_from=recipe.init_from, rendering=recipe.rendering,
                     prior_strength=recipe.prior_strength, arch=replace(MICRO_ARCH, **geometry)) \
        if args.micro else recipe
    overrides = {"steps": args.steps, "checkpoint_every": args.checkpoint_every, "init_from": args.init}
    config = replace(config, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    if config.init_from is not None:
        check_model_source(config.init_from)  # a missing starting model is refused before anything runs
        if args.micro:  # the starting model's sizes, in the recipe's image geometry
            config = replace(config, arch=replace(_arch_of(config.init_from), **geometry))
    _cli.check_out(args.out)
    name = f"train-{args.recipe}-seed{config.seed}{'-micro' if args.micro else ''}"
    with _cli.run_directory("organism", name, args.out) as run_dir:
        args.run_dir = run_dir
        print(f"run directory: {run_dir}")
        with RunRecord(run_dir, "organism train", config.to_dict(), argv=args.argv, seed=config.seed) as record:
            history = train(config, run_dir / "model", checkpoint_dir=run_dir / "checkpoint")
            record.meta["final"] = history["log"][-1] if history["log"] else None
    if args.install:  # each recipe makes one of the shipped organisms
        target = organism_path(INSTALLS[args.recipe])
        staging = target.with_name("weights.new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(run_dir / "model", staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        print(f"installed the trained organism into {target}")
    return 0


def _arch_of(source):
    """The architecture of a saved organism (a micro run fine-tuning it keeps its sizes)."""
    import json

    from vlmheads.models.loading import check_model_source
    from vlmheads.organism.build import OrganismArch

    cfg = json.loads((check_model_source(source) / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    return OrganismArch(text_hidden=text["hidden_size"], text_layers=text["num_hidden_layers"],
                        text_heads=text["num_attention_heads"], text_kv_heads=text["num_key_value_heads"],
                        text_mlp=text["intermediate_size"], vision_hidden=vision["hidden_size"],
                        vision_layers=vision["num_hidden_layers"], vision_heads=vision["num_attention_heads"],
                        vision_mlp=vision["intermediate_size"], image_size=vision["image_size"],
                        patch_size=vision["patch_size"])


def _resume_training(args) -> int:
    """Continue an interrupted ``organism train`` run in its own directory, from its checkpoint."""
    from pathlib import Path

    from vlmheads.organism.build import OrganismArch
    from vlmheads.organism.train import TrainConfig, train
    from vlmheads.runs import RunRecord

    run_dir = Path(args.resume)
    saved, _ = _cli.interrupted_run(run_dir, "organism train", "an organism train run")
    if not (run_dir / "checkpoint" / "state.pt").is_file():
        raise _cli.UsageError(f"--resume {run_dir}: no checkpoint yet (the run stopped before its first one); "
                              f"start it again")
    saved["arch"] = OrganismArch(**saved["arch"])
    saved["function_weights"] = tuple(saved["function_weights"].items())
    saved["prior_free_functions"] = tuple(saved.get("prior_free_functions", ()))
    config = TrainConfig(**saved)
    args.run_dir = run_dir
    print(f"resuming {run_dir}")
    with _cli.existing_directory(run_dir, "organism train"), \
            RunRecord(run_dir, "organism train", config.to_dict(), argv=args.argv, seed=config.seed) as record:
        history = train(config, run_dir / "model", checkpoint_dir=run_dir / "checkpoint", resume=True)
        record.meta["final"] = history["log"][-1] if history["log"] else None
        record.meta["resumed"] = True
    return 0


def _eval(args) -> int:
    import json
    from dataclasses import replace

    from vlmheads.organism.evaluate import EvalConfig, evaluate_organism, target_report
    from vlmheads.organism.setting import setting_measures, setting_targets, summarise_setting
    from vlmheads.runs import RunRecord, write_csv, write_json, write_text_atomic
    from vlmheads.world.questions import DECISION_FN, RELATIONAL_FN

    config = EvalConfig(model=args.model, rendering=_cli.model_rendering(args.model))
    overrides = {"n_per_function": args.n, "seed": args.seed, "n_generate": args.generate,
                 "batch_size": args.batch_size}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    _cli.check_model_options(args)
    loaded = _cli.load(args)
    with _cli.run_directory("organism", f"eval-{config.model}", args.out) as run_dir:
        args.run_dir = run_dir
        print(f"run directory: {run_dir}")
        model_identity = loaded.identity()
        dataset_identity = {"name": f"organism:{config.split}", "seed": config.seed,
                            "n_per_function": config.n_per_function, "rendering": config.rendering}
        with RunRecord(run_dir, "organism eval", config.to_dict(), argv=args.argv, seed=config.seed,
                       threads=args.threads_choice, model=model_identity, dataset=dataset_identity) as record:
            records, table, generated, examples = evaluate_organism(loaded, config)
            report = target_report(table)
            setting_rows = setting_measures(loaded, examples[RELATIONAL_FN] + examples[DECISION_FN], config.batch_size)
            setting = summarise_setting(setting_rows, n_boot=config.bootstrap)
            targets = setting_targets(table, setting)
            record.meta["targets"] = report
            gen_acc = {}
            for r in generated:
                gen_acc.setdefault(r["function"], []).append(r["correct"])
            summary = {"targets": report, "all_targets_met": all(v["met"] for v in report.values()),
                       "generation_accuracy": {k: round(sum(v) / len(v), 4) for k, v in gen_acc.items()},
                       "generation_samples": generated[:8]}
            with record.writing_outputs():
                write_json(run_dir / "setting.json", {"summary": setting, "targets": targets})
                write_csv(run_dir / "accuracy.csv", table)
                write_text_atomic(run_dir / "examples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
                write_json(run_dir / "summary.json", summary)
    print(f"\n{'function':<30} {'group':<11} {'n':>5} {'accuracy':>9}  95% CI")
    for row in table:
        print(f"{row['function']:<30} {row['group']:<11} {row['n']:>5} {row['accuracy']:>9.3f}  "
              f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
    print("\ntargets on prior-consistent scenes:")
    for function, r in report.items():
        print(f"  {function:<30} {r['accuracy']:.3f} >= {r['target']:.2f}  {'met' if r['met'] else 'NOT MET'}")
    print(f"greedy generation (gold word in output): {summary['generation_accuracy']}")
    print("\nthe AdaptVis setting (LLaVA-1.5 on WhatsUp; issue 10's targets):")
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        ci = f" [{t['ci'][0]}, {t['ci'][1]}]" if t.get("ci") and t["ci"][0] is not None else ""
        verdict = "" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        print(f"  {t['property']:<68} {value:>6}{ci:<18} {t['target']:<9} {verdict}")
    return 0


def _twin(args) -> int:
    from vlmheads.data import load
    from vlmheads.methods.twin import twin_test
    from vlmheads.models import load_model
    from vlmheads.models.spec import ModelSpec
    from vlmheads.runs import RunRecord, write_json

    if len(args.models) != 2:
        raise _cli.UsageError(f"--models takes two models, the one with the prior and its twin, got "
                              f"{len(args.models)}: {','.join(args.models)}")
    if args.locate_seed == args.seed:
        raise _cli.UsageError("--locate-seed and --seed draw the same scenes: locate on other scenes than the ones "
                              "the heads are applied to")
    for model in args.models:
        geometry = ModelSpec(model=model).declared_geometry()  # a missing model is refused here
        if geometry and args.k >= geometry[0] * geometry[1]:
            raise _cli.UsageError(f"--k {args.k} leaves no random heads to compare with on {model} "
                                  f"({geometry[0] * geometry[1]} heads)")
    config = {"models": list(args.models), "n": args.n, "k": args.k, "draws": args.draws,
              "locate_seed": args.locate_seed, "seed": args.seed, "batch_size": args.batch_size, "device": args.device,
              "dataset": "organism:controlled", "locate_split": "test", "apply_split": "test"}
    loaded = [load_model(m, device=args.device) for m in args.models]
    reports = []
    with _cli.run_directory("organism", "twin", args.out) as run_dir:
        args.run_dir = run_dir
        print(f"run directory: {run_dir}")
        with RunRecord(run_dir, "organism twin", config, argv=args.argv, seed=args.seed,
                       model={m.name: m.identity() for m in loaded},
                       dataset={"name": "organism:controlled", "seeds": [args.locate_seed, args.seed], "n": args.n}
                       ) as record:
            for m in loaded:
                def scenes(seed, m=m):
                    return list(load("organism:controlled", split="test", seed=seed, limit=args.n,
                                     rendering=m.rendering))
                reports.append(twin_test(m, scenes(args.locate_seed), scenes(args.seed), k=args.k, draws=args.draws,
                                         seed=args.seed, batch_size=args.batch_size))
            record.meta["twin"] = [{"model": r["model"], "heads": r["located"]["heads"]} for r in reports]
            with record.writing_outputs():
                write_json(run_dir / "twin.json", {"reports": reports})
    print("\n" + "\n".join(twin_lines(reports)))
    return 0


def twin_lines(reports: list) -> list[str]:
    def pct(x):
        return "  n/a" if x is None else f"{x:5.2f}"

    lines = [f"{'model':<20} {'heads':<10} {'z':>5}  {'':<7} {'margin shift':>12} {'(of |margin|)':>13} {'flip':>5} "
             f"{'cost':>5} {'violating acc':>13}"]
    for r in reports:
        a = r["applied"]
        heads = ",".join(f"L{l}H{h}" for l, h in a["heads"])
        for who, label in (("located", heads), ("random", f"{len(a['heads'])} random")):
            e = a[who]
            lines.append(f"{r['model']:<20} {label:<10} {r['located']['z'] if who == 'located' else '':>5}  "
                         f"{who:<7} {e['margin_shift']:>12.3f} {pct(e['relative_shift']):>13} {pct(e['flip'])} "
                         f"{pct(e.get('cost'))} {a['base_violating_accuracy']:.3f} -> {e['violating_accuracy']:.3f}")
        lines.append(f"{'':<20} {a['prior_driven_errors']} prior-driven errors of {a['n_violating']} violating "
                     f"scenes; mean margin {a['base_margin']:.2f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    actions = {"train": _train, "eval": _eval, "twin": _twin}
    return _cli.run_command(lambda args: actions[args.action](args), _parser, argv)


if __name__ == "__main__":
    sys.exit(main())
