"""python -m heads.intervene --emphasize top-k: act on located heads; compare with ScalingVis/AdaptVis."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    from vlmheads.intervene import METHODS

    p = argparse.ArgumentParser(prog="python -m heads.intervene", description=__doc__)
    p.add_argument("--model", default="organism")
    p.add_argument("--dataset", action="append", default=None,
                   help="dataset name, repeatable (default: organism:controlled and organism:vsr)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--method", action="append", default=None, help=f"repeatable; from {', '.join(METHODS)} (default: all)")
    p.add_argument("--heads-from", default=None, help="locate run directory (default: newest for this model/function)")
    p.add_argument("--function", default="spatial", help="function whose heads to use when picking a locate run")
    p.add_argument("--emphasize", default=None, metavar="top-K", help="emphasise the top K located heads")
    p.add_argument("--ablate", default=None, metavar="top-K", help="ablate the top K located heads")
    p.add_argument("--sweep", action="store_true",
                   help="tune alpha / threshold / gamma on the validation split (default: published defaults)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p


def _top(spec: str | None) -> int | None:
    if spec is None:
        return None
    m = re.fullmatch(r"(?:top-?)?(\d+)", spec.strip().lower())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"expected top-K with K >= 1 (e.g. top-3), got {spec!r}")
    return int(m.group(1))


def newest_locate_run(model: str, function: str, root: Path | None = None) -> Path:
    from vlmheads.data import canonical_function
    from vlmheads.runs import DEFAULT_RESULTS

    root = root or DEFAULT_RESULTS / "locate"
    function = canonical_function(function)
    runs = []
    for heads in sorted(root.glob("*/heads.json")):
        info = json.loads(heads.read_text())
        if info.get("function") == function and Path(str(info.get("model"))).name == Path(model).name:
            runs.append(heads.parent)
    if not runs:
        raise FileNotFoundError(f"no locate run for model {model!r} and function {function!r} under {root}; run "
                                f"`python -m heads.locate --function {function}` first or pass --heads-from RUN")
    return runs[-1]


def ranked_heads(run: Path) -> tuple[list[tuple[int, int]], dict]:
    info = json.loads((run / "heads.json").read_text())
    rows = [r for r in csv.DictReader((run / "scores.csv").open())
            if r["method"] == info["select_by"] and r["function"] == info["function"]]
    rows.sort(key=lambda r: int(r["rank"]))
    return [(int(r["layer"]), int(r["head"])) for r in rows], info


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from vlmheads.intervene import METHODS, InterveneConfig, run_intervene, table_lines, write_outputs
    from vlmheads.models import load_model
    from vlmheads.runs import RunRecord, new_run_dir

    try:
        methods = tuple(args.method or METHODS)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        k_emph, k_abl = _top(args.emphasize), _top(args.ablate)
        run = Path(args.heads_from) if args.heads_from else newest_locate_run(args.model, args.function)
        if not (run / "heads.json").is_file():
            raise FileNotFoundError(f"{run} is not a locate run (no heads.json)")
        order, info = ranked_heads(run)
        k = k_emph or k_abl or info["k"]
        if k > len(order):
            raise ValueError(f"top-{k} asks for more heads than the model has ({len(order)})")
        heads = tuple(order[:k])
        config = InterveneConfig(model=args.model, datasets=tuple(args.dataset or InterveneConfig.datasets),
                                 data_root=args.data_root, methods=methods, heads=heads, heads_from=str(run), k=k,
                                 sweep=args.sweep, ranking=tuple(order), batch_size=args.batch_size, seed=args.seed)
        loaded = load_model(config.model)
        run_dir = new_run_dir("intervene", f"{info['function']}-top{k}", out=args.out)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}\nheads (top {k} by {info['select_by']} for {info['function']}, from {run}): "
          + ", ".join(f"L{l}H{h}" for l, h in heads))
    try:
        with RunRecord(run_dir, "intervene", config.to_dict(), argv=argv, seed=config.seed,
                       model={"name": loaded.name, "family": loaded.adapter.family},
                       locate_run={"path": str(run), "function": info["function"], "select_by": info["select_by"],
                                   "k": k, "heads": [list(h) for h in heads]}) as record:
            result = run_intervene(loaded, config, log=lambda s: print(s, flush=True))
            record.meta["timings"].update({k: round(v, 3) for k, v in result.timings.items()})
            record.meta["layout_probe_accuracy"] = result.probe_accuracy
            record.meta["skipped"] = result.skipped
            write_outputs(result, run_dir)
    except (ValueError, FileNotFoundError, IndexError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n" + "\n".join(table_lines(result, ("all", "prior=consistent", "prior=violating"))))
    for what, why in result.skipped.items():
        print(f"skipped {what}: {why}")
    print(f"\nwrote {run_dir}/results.csv, comparison.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
