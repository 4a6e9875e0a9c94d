"""python -m heads.locate --function spatial: which heads carry one cognitive function?"""

from __future__ import annotations

import sys
from typing import Sequence

from heads import _cli


def _parser():
    from vlmheads.locate import LOCATE_METHODS
    from vlmheads.site import ABLATIONS

    p = _cli.command_parser("python -m heads.locate", __doc__)
    p.add_argument("--function", default="spatial", help="cognitive function or alias (default: spatial)")
    _cli.add_model_options(p)
    p.add_argument("--dataset", default="organism:decomposed", help="dataset name (default: organism:decomposed)")
    p.add_argument("--data-root", default=None, help="folder of a real dataset (whatsup/vsr)")
    p.add_argument("--n", type=_cli.positive("--n", 4), default=64, help="examples (and counterfactual pairs) per function")
    p.add_argument("--methods", default=",".join(LOCATE_METHODS), help=f"comma list from {','.join(LOCATE_METHODS)}")
    p.add_argument("--ablation", default="zero", choices=ABLATIONS)
    p.add_argument("--metric", default="logit_diff", choices=("logit_diff", "prob", "accuracy"))
    p.add_argument("--select-by", default="ablation",
                   choices=("ablation", "noising", "denoising", "attribution", "probe"))
    p.add_argument("--top-k", type=_cli.positive("--top-k"), default=None, help="number of heads to select (default: elbow)")
    p.add_argument("--random-draws", type=_cli.positive("--random-draws"), default=5,
                   help="random head sets in the ablation check (default 5)")
    _cli.add_run_options(p, batch_size=32)
    return p


def _run(args) -> int:
    from vlmheads.locate import LocateConfig, examples_by_function, report_lines, run_locate, write_outputs
    from vlmheads.runs import RunRecord

    config = LocateConfig(
        function=args.function, model=args.model, dataset=args.dataset, data_root=args.data_root, n=args.n,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), ablation=args.ablation,
        metric=args.metric, select_by=args.select_by, top_k=args.top_k, random_draws=args.random_draws,
        batch_size=args.batch_size, seed=args.seed, device=args.device, dtype=args.dtype,
        device_map=args.device_map, attn_implementation=args.attn_implementation)
    _cli.check_model_options(args)
    examples = examples_by_function(config)
    loaded = _cli.load(args)
    g = loaded.geometry
    if config.top_k is not None and config.top_k > g.n_total:
        raise _cli.UsageError(f"--top-k {config.top_k} is larger than the number of heads: {loaded.name} has "
                              f"{g.n_total} ({g.n_layers} layers x {g.n_heads}); choose 1..{g.n_total}")
    with _cli.run_directory("locate", f"{config.function}-{loaded.name.split('/')[-1]}", args.out) as run_dir:
        args.run_dir = run_dir
        print(f"run directory: {run_dir}")
        model_identity = loaded.identity()
        # a failed run keeps its directory, with metadata.json saying why
        with RunRecord(run_dir, "locate", config.to_dict(), argv=args.argv, seed=config.seed, model=model_identity,
                       dataset={"name": config.dataset, "root": config.data_root, "n_per_function": config.n}) as record:
            result = run_locate(loaded, config, log=lambda s: print(s, flush=True), examples=examples)
            for stage, seconds in result.timings.items():
                record.time(stage, seconds)
            record.meta["selected"] = [list(h) for h in result.selected]
            write_outputs(result, run_dir)
    print("\n".join(report_lines(result)))
    print(f"\nwrote {run_dir}/scores.csv, heads.json, headmap.html")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _cli.run_command(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
