"""python -m heads.locate --function spatial: which heads carry one cognitive function?"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    from vlmheads.locate import METHODS

    p = argparse.ArgumentParser(prog="python -m heads.locate", description=__doc__)
    p.add_argument("--function", default="spatial", help="cognitive function or alias (default: spatial)")
    p.add_argument("--model", default="organism", help="'organism' (default), a HF id or a local model directory")
    p.add_argument("--dataset", default="organism:decomposed", help="dataset name (default: organism:decomposed)")
    p.add_argument("--data-root", default=None, help="folder of a real dataset (whatsup/vsr)")
    p.add_argument("--n", type=int, default=64, help="examples (and counterfactual pairs) per function")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {','.join(METHODS)}")
    p.add_argument("--ablation", default="zero", choices=("zero", "mean", "resample"))
    p.add_argument("--metric", default="logit_diff", choices=("logit_diff", "prob", "accuracy"))
    p.add_argument("--select-by", default="ablation",
                   choices=("ablation", "noising", "denoising", "attribution", "probe"))
    p.add_argument("--top-k", type=int, default=None, help="number of heads to select (default: elbow)")
    p.add_argument("--random-draws", type=int, default=5, help="random head sets in the ablation check")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the model's float32)")
    p.add_argument("--out", default=None, help="run directory (default: results/locate/<run_id>)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from vlmheads.locate import LocateConfig, report_lines, run_locate, write_outputs
    from vlmheads.models import load_model
    from vlmheads.runs import RunRecord, new_run_dir

    try:
        config = LocateConfig(
            function=args.function, model=args.model, dataset=args.dataset, data_root=args.data_root, n=args.n,
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), ablation=args.ablation,
            metric=args.metric, select_by=args.select_by, top_k=args.top_k, random_draws=args.random_draws,
            batch_size=args.batch_size, seed=args.seed, device=args.device, dtype=args.dtype)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        loaded = load_model(config.model, device=config.device, dtype=config.dtype)
    except (OSError, ValueError) as err:
        print(f"error: cannot load model {config.model!r}: {err}", file=sys.stderr)
        return 2
    if loaded.processor is None:
        print(f"error: {config.model} has no processor; save one beside the model (processor.save_pretrained)",
              file=sys.stderr)
        return 2
    g = loaded.geometry
    if config.top_k is not None and config.top_k > g.n_total:
        print(f"error: --top-k {config.top_k} is larger than the number of heads: {loaded.name} has {g.n_total} "
              f"({g.n_layers} layers x {g.n_heads}); choose 1..{g.n_total}", file=sys.stderr)
        return 2
    try:
        run_dir = new_run_dir("locate", f"{config.function}-{loaded.name.split('/')[-1]}", out=args.out)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    model_identity = {"name": loaded.name, "family": loaded.adapter.family, "geometry": vars(g)}
    try:  # a failed run keeps its directory, with metadata.json saying why
        with RunRecord(run_dir, "locate", config.to_dict(), argv=argv, seed=config.seed, model=model_identity,
                       dataset={"name": config.dataset, "root": config.data_root, "n_per_function": config.n}) as record:
            result = run_locate(loaded, config, log=lambda s: print(s, flush=True))
            record.meta["timings"].update({k: round(v, 3) for k, v in result.timings.items()})
            record.meta["selected"] = [list(h) for h in result.selected]
            write_outputs(result, run_dir, loaded.name)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report_lines(result)))
    print(f"\nwrote {run_dir}/scores.csv, heads.json, headmap.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
