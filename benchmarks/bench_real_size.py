"""Benchmark: the real-size path, side by side in one run. Screen + verify against all-head exact ablation,
and AdaptVis, on a random-weight model with 32 layers x 32 heads (LLaVA-1.5-7B's head layout).

    python benchmarks/bench_real_size.py [--n 8] [--verify 64] [--threads 2]

On a CUDA machine it builds the real LLaVA-1.5-7B text geometry (hidden 4096, 32 x 32 heads, MLP 11008)
in bfloat16 and reports seconds and peak GPU memory; on CPU it keeps the 32 x 32-head layout at a width a
2-core machine can run (hidden 256, head_dim 8, MLP 512) and says so in its first line. Figures, per
example where it says so:

* all-head exact zero-ablation (the restart engine) vs screen (attribution estimate of every head's
  ablation effect) + exact ablation of the ``--verify`` heads the screen ranks highest: seconds,
  forward-equivalents, the cost ratio, and the screen's recall of the all-head exact top-10;
* AdaptVis as two full passes vs sharing the prompt's KV cache.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


def _model(device: str):
    from vlmheads.models import wrap_model
    from vlmheads.organism.build import OrganismArch, build_model, build_processor

    processor = build_processor()
    if device.startswith("cuda"):  # LLaVA-1.5-7B's decoder geometry; the organism's small vision tower
        arch = replace(OrganismArch(), text_hidden=4096, text_layers=32, text_heads=32, text_kv_heads=32,
                       text_mlp=11008)
        note = "LLaVA-1.5-7B decoder geometry (hidden 4096, 32 x 32 heads), bfloat16, random weights"
        dtype = torch.bfloat16
    else:
        arch = replace(OrganismArch(), text_hidden=256, text_layers=32, text_heads=32, text_kv_heads=32,
                       text_mlp=512)
        note = "CPU: 32 x 32 heads at width 256 (head_dim 8), float32, random weights (the 7B widths need a GPU)"
        dtype = torch.float32
    model = build_model(arch, processor.tokenizer, seed=0).to(device=device, dtype=dtype)
    model.set_attn_implementation("eager")
    return wrap_model(model, processor, name="random-32x32"), note


def _timed(fn, sync):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8, help="examples")
    p.add_argument("--verify", type=int, default=40, help="heads the exact ablation verifies after the screen")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vlmheads.interventions import AdaptVis, adaptvis_logits
    from vlmheads.methods.batches import option_batches
    from vlmheads.methods.effects import ablation_effects
    from vlmheads.methods.screen import screened_ablation
    from vlmheads.methods.selection import ranked

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loaded, note = _model(args.device)
    g = loaded.geometry
    batches = option_batches(loaded, loaded.examples(args.n, seed=0, function="spatial"), args.n)
    print(f"{note}; {args.n} examples, {args.threads} threads, device {args.device}")

    t_fwd, _ = _timed(lambda: [loaded.model(**b.inputs, use_cache=False) for b in batches], sync)
    with torch.no_grad():
        t_fwd, _ = _timed(lambda: [loaded.model(**b.inputs, use_cache=False) for b in batches], sync)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_exact, exact = _timed(lambda: ablation_effects(loaded, batches), sync)
    peak_exact = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_screen, (estimate, verified, heads) = _timed(lambda: screened_ablation(loaded, batches, args.verify), sync)
    peak_screen = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    top_exact = ranked(exact.effects.mean(0))[:10]
    top_verified = ranked(verified.effects.mean(0))[:10]
    recall = len(set(top_exact) & set(top_verified)) / 10
    in_candidates = len(set(top_exact) & set(heads)) / 10
    per = 1 / args.n
    print(f"all-head exact ablation ({g.n_total} heads): {t_exact:8.2f} s ({t_exact * per:.3f} s/example, "
          f"{t_exact / t_fwd:6.1f} forward-equivalents, path {exact.path})"
          + (f", peak {peak_exact:.1f} GiB" if cuda else ""))
    print(f"screen + verify {args.verify}:              {t_screen:8.2f} s ({t_screen * per:.3f} s/example, "
          f"{t_screen / t_fwd:6.1f} forward-equivalents)" + (f", peak {peak_screen:.1f} GiB" if cuda else ""))
    print(f"  cost ratio {t_screen / t_exact:.3f} of the all-head exact run (target <= 0.10); recall of the exact "
          f"top-10: verified top-10 {recall:.2f}, candidates {in_candidates:.2f} (target >= 0.9)")
    organism_screen(args, sync)
    iv = AdaptVis(0.5, 1.5, 0.4)
    t_two, _ = _timed(lambda: [adaptvis_logits(loaded, b.inputs, iv, shared_prefix=False) for b in batches], sync)
    t_shared, _ = _timed(lambda: [adaptvis_logits(loaded, b.inputs, iv) for b in batches], sync)
    print(f"AdaptVis: two full passes {t_two * per:.3f} s/example ({t_two / t_fwd:.2f} forward passes); shared "
          f"prompt cache {t_shared * per:.3f} s/example ({t_shared / t_fwd:.2f}); {t_two / t_shared:.2f}x")


def organism_screen(args, sync) -> None:
    """The same comparison on the trained organism (32 heads, known located heads), per function."""
    from vlmheads.methods.batches import option_batches
    from vlmheads.methods.effects import ablation_effects
    from vlmheads.methods.screen import screened_ablation
    from vlmheads.methods.selection import ranked
    from vlmheads.models import load_model

    loaded = load_model("organism", device=args.device if not args.device.startswith("cuda") else "cpu")
    for function in ("spatial", "relational", "decision", "object"):
        batches = option_batches(loaded, loaded.examples(32, seed=0, function=function), 32)
        t_exact, exact = _timed(lambda: ablation_effects(loaded, batches), sync)
        for verify in (8, 16):
            t_screen, (_, verified, _) = _timed(lambda: screened_ablation(loaded, batches, verify), sync)
            top = {k: len(set(ranked(exact.effects.mean(0))[:k]) & set(ranked(verified.effects.mean(0))[:k])) / k
                   for k in (3, 10)}
            print(f"organism {function:<10} verify {verify:>2} of 32: cost {t_screen / t_exact:.2f} of all-head exact; "
                  f"recall top-3 {top[3]:.2f}, top-10 {top[10]:.2f}")


if __name__ == "__main__":
    main()
