"""python -m heads.organism train|eval: retrain or evaluate the model organism.

    python -m heads.organism eval                       # the shipped organism on fresh held-out scenes
    python -m heads.organism eval --model DIR           # any saved organism-format model
    python -m heads.organism train                      # seeded retraining (~23 min on 2 cores)
    python -m heads.organism train --install            # ... and replace the shipped weights
    python -m heads.organism train --micro              # a few steps of a micro model (checks the loop)

Each run writes config.json + metadata.json into its run directory (results/organism/<run_id>/).
Training saves the model there; only ``--install`` copies it over the shipped organism, after the
run has finished, so an interrupted run never damages it.
"""

from __future__ import annotations

import sys
from typing import Sequence

from heads import _cli


def _parser():
    parser = _cli.command_parser("python -m heads.organism", __doc__)
    sub = parser.add_subparsers(dest="action", metavar="{train,eval}", required=True, parser_class=_cli._Parser)
    train = sub.add_parser("train", help="train the organism from scratch")
    train.add_argument("--steps", type=_cli.positive(), default=None,
                       help="training steps (default: the shipped recipe)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--micro", action="store_true", help="a few steps of a micro model: checks the loop only")
    train.add_argument("--install", action="store_true", help="copy the trained model over the shipped organism")
    train.add_argument("--out", default=None, help="run directory (default: results/organism/<run_id>)")
    ev = sub.add_parser("eval", help="accuracy per function on fresh held-out scenes")
    _cli.add_model_options(ev)
    ev.add_argument("--n", type=_cli.positive(), default=None, help="examples per function (default 1200)")
    ev.add_argument("--generate", type=_cli.positive(0), default=None,
                    help="examples per function for the generation check (default 48; 0 skips it)")
    ev.add_argument("--batch-size", type=_cli.positive(), default=None, help="default 64")
    ev.add_argument("--seed", type=int, default=None, help="scene seed (default 20000, never used in training)")
    ev.add_argument("--out", default=None, help="run directory (default: results/organism/<run_id>)")
    return parser


def _train(args) -> int:
    import shutil
    from dataclasses import replace

    from vlmheads.models.loading import organism_path
    from vlmheads.organism.train import MICRO_CONFIG, TrainConfig, train
    from vlmheads.runs import RunRecord

    if args.install and args.micro:
        raise _cli.UsageError("--install with --micro would replace the shipped organism with an untrained micro "
                              "model; drop --install")
    config = MICRO_CONFIG if args.micro else TrainConfig()
    config = replace(config, seed=args.seed, **({"steps": args.steps} if args.steps is not None else {}))
    _cli.check_out(args.out)
    with _cli.run_directory("organism", f"train-seed{config.seed}{'-micro' if args.micro else ''}", args.out) as run_dir:
        args.run_dir = run_dir
        print(f"run directory: {run_dir}")
        with RunRecord(run_dir, "organism train", config.to_dict(), argv=args.argv, seed=config.seed) as record:
            history = train(config, run_dir / "model")
            record.meta["final"] = history["log"][-1] if history["log"] else None
    if args.install:
        target = organism_path()
        staging = target.with_name("weights.new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(run_dir / "model", staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        print(f"installed the trained organism into {target}")
    return 0


def _eval(args) -> int:
    import json
    from dataclasses import replace

    from vlmheads.data import organism_examples
    from vlmheads.organism.evaluate import EvalConfig, evaluate_organism, target_report
    from vlmheads.organism.setting import setting_measures, setting_targets, summarise_setting
    from vlmheads.runs import RunRecord, write_csv, write_json, write_text_atomic
    from vlmheads.world.questions import DECISION_FN, RELATIONAL_FN

    config = EvalConfig(model=args.model)
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
                            "n_per_function": config.n_per_function}
        with RunRecord(run_dir, "organism eval", config.to_dict(), argv=args.argv, seed=config.seed,
                       model=model_identity, dataset=dataset_identity) as record:
            records, table, generated = evaluate_organism(loaded, config)
            report = target_report(table)
            setting_rows = setting_measures(loaded, [e for f in (RELATIONAL_FN, DECISION_FN) for e in organism_examples(
                config.n_per_function, seed=config.seed, function=f, split=config.split)], config.batch_size)
            setting = summarise_setting(setting_rows, n_boot=config.bootstrap)
            targets = setting_targets(table, setting)
            write_json(run_dir / "setting.json", {"summary": setting, "targets": targets})
            record.meta["targets"] = report
            write_csv(run_dir / "accuracy.csv", table)
            write_text_atomic(run_dir / "examples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            gen_acc = {}
            for r in generated:
                gen_acc.setdefault(r["function"], []).append(r["correct"])
            summary = {"targets": report, "all_targets_met": all(v["met"] for v in report.values()),
                       "generation_accuracy": {k: round(sum(v) / len(v), 4) for k, v in gen_acc.items()},
                       "generation_samples": generated[:8]}
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


def main(argv: Sequence[str] | None = None) -> int:
    return _cli.run_command(lambda args: _train(args) if args.action == "train" else _eval(args), _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
