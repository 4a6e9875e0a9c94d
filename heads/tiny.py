"""python -m heads.tiny FAMILY DIR: write a tiny random copy of a supported VLM family, with its real
processor class, that every command loads (--model DIR): smoke-test a pipeline before paying for GPU time.

    python -m heads.tiny qwen2_vl /tmp/tiny-qwen && python -m heads.locate --model /tmp/tiny-qwen --n 8
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from heads import _cli


def _parser():
    from vlmheads.testing import TINY_BUILDERS

    p = _cli.command_parser("python -m heads.tiny", __doc__)
    p.add_argument("family", choices=sorted(TINY_BUILDERS), help="the family to copy")
    p.add_argument("dir", help="where to write it (a new or empty directory)")
    p.add_argument("--mha", action="store_true", help="full multi-head attention (default: grouped-query)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _run(args) -> int:
    from vlmheads.models import load_model
    from vlmheads.testing import TINY_BUILDERS, tiny_processor

    out = Path(args.dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _cli.UsageError(f"{out} is a file or already holds files; pass a new or empty directory")
    model, _, processor = TINY_BUILDERS[args.family](gqa=not args.mha, seed=args.seed)
    processor = processor or tiny_processor(args.family)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    loaded = load_model(out)  # what every command will do with it
    g = loaded.geometry
    print(f"wrote a tiny random {args.family} ({type(model).__name__}, {g.n_layers} layers x {g.n_heads} heads, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters) with its {type(processor).__name__} to {out}")
    print(f"try: python -m heads.locate --model {out} --n 8 --methods ablation")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _cli.run_command(_run, _parser, argv)


if __name__ == "__main__":
    sys.exit(main())
