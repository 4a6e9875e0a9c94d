"""Benchmark: flow's per-patch knockout on a shared prefix (``flow.rollout.patch_knockout``: the prompt
minus its last token once into a KV cache, then the last token once per few image tokens) against a
whole prompt pass per image token (``_patch_knockout_full``, what flow ran before), side by side in one
process, with the largest difference of the drops they give.

    python benchmarks/bench_rollout.py [--model llava-1.5-7b] [--layers 4] [--patches 4]

The model is a random-weight copy of a true config (``vlmheads.testing.real_configs``) in bf16 with its
decoder cut to ``--layers`` at true width, or ``organism`` (the shipped model). The pass-per-patch side
is timed on its first ``--patches`` image tokens only (at 576 tokens it would take an hour on a CPU):
the printed figures are seconds per image token.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from vlmheads.flow.rollout import _patch_knockout_full, patch_knockout
    from vlmheads.methods.batches import option_batches
    from vlmheads.models import load_model, wrap_model

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llava-1.5-7b", help="a name in real_configs, or organism")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--patches", type=int, default=4, help="image tokens the pass-per-patch side is timed on")
    p.add_argument("--n", type=int, default=2, help="examples in the batch")
    args = p.parse_args()
    if args.model.startswith("organism"):
        loaded = load_model(args.model)
    else:
        from vlmheads.testing.real_configs import build_real

        model, processor = build_real(args.model, text_layers=args.layers, dtype=torch.bfloat16)
        loaded = wrap_model(model, processor, name=args.model)
    batch = option_batches(loaded, loaded.examples(args.n, seed=0, function="relational"), args.n)[0]
    n_image = int(loaded.image_token_mask(batch.inputs)[0].sum())
    print(f"{loaded.name}: {loaded.geometry.n_layers} layers, {loaded.dtype}, batch {args.n} x "
          f"{batch.inputs['input_ids'].shape[1]} tokens, {n_image} image tokens, {torch.get_num_threads()} threads")
    for _ in range(2):  # twice, alternating: the second round is the one reported
        t = time.perf_counter()
        shared = patch_knockout(loaded, batch)
        t_shared = (time.perf_counter() - t) / n_image
        t = time.perf_counter()
        full = _patch_knockout_full(loaded, batch, patches=args.patches)
        t_full = (time.perf_counter() - t) / full.shape[1]
    gap = float((shared[:, :full.shape[1]] - full).abs().max())
    print(f"shared prefix:  {t_shared:.4f} s per image token ({t_shared * n_image:.1f} s for all {n_image})")
    print(f"pass per patch: {t_full:.4f} s per image token (timed on {full.shape[1]}; {t_full * n_image:.1f} s "
          f"for all {n_image}, the plain pass included)")
    print(f"ratio: {t_full / t_shared:.1f}x faster; largest difference of the drops {gap:.2e} "
          f"(drops up to {float(full.abs().max()):.3f})")


if __name__ == "__main__":
    main()
