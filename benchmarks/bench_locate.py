"""Benchmark: exact per-head ablation and the attribution screen on the organism, measured side by side.

    python benchmarks/bench_locate.py [--n 64] [--batch-size 32] [--threads 2] [--model organism]

Prints, in one run on the same examples, alternating the two in ``--repeats`` rounds (this shared
machine's speed drifts by +-25% between runs; the median per-round ratio is the figure to quote):
* a plain nnsight loop: one traced forward pass per (head, batch), zeroing that head;
* the library's sweep (``ablation_effects``): restart at the ablated layer, all heads of a layer
  in one batched pass;
and checks that both give the same effects. Then the cost of the attribution screen (clean forward
with gradients + backward + corrupted forward) in units of one plain forward pass.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="organism")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--random-layers", type=int, default=None,
                   help="instead of the trained organism, a randomly initialised organism-architecture model "
                        "with this many decoder layers (how the saving scales with depth)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vlmheads.data import organism_examples, organism_pairs
    from vlmheads.methods.attribution import attribution_effects
    from vlmheads.methods.batches import metric, option_batches
    from vlmheads.methods.effects import ablation_effects, pair_batches
    from vlmheads.models import load_model
    from vlmheads.tracing import edit_heads

    if args.random_layers:
        from dataclasses import replace

        from vlmheads.models import wrap_model
        from vlmheads.organism.build import OrganismArch, build_model, build_processor

        processor = build_processor()
        model = build_model(replace(OrganismArch(), text_layers=args.random_layers), processor.tokenizer, seed=0)
        model.set_attn_implementation("eager")
        loaded = wrap_model(model.to(args.device), processor, name=f"random-organism-{args.random_layers}-layers")
    else:
        loaded = load_model(args.model, device=args.device)
    g = loaded.geometry
    batches = option_batches(loaded, organism_examples(args.n, seed=0, function="spatial", split="controlled",
                                                      rendering=loaded.rendering),
                             args.batch_size)

    def plain_loop():
        out = torch.zeros(args.n, g.n_layers, g.n_heads)
        row = 0
        for b in batches:
            base = metric(edit_heads(loaded, b.inputs, {}).logits[:, -1], b.option_ids, b.answer)
            for layer in range(g.n_layers):
                for h in range(g.n_heads):
                    def zero(z, h=h):
                        z[:, :, h] = 0
                    logits = edit_heads(loaded, b.inputs, {layer: zero}).logits[:, -1]
                    out[row:row + b.size, layer, h] = base - metric(logits, b.option_ids, b.answer)
            row += b.size
        return out

    def timed(fn):
        t = time.perf_counter()
        result = fn()
        return time.perf_counter() - t, result

    plain_loop()  # warm-up (nnsight's first trace compiles)
    ablation_effects(loaded, batches, "zero")
    # alternate the two so that drifts of this shared machine hit both alike; report each one's best
    # time and the median of the per-round ratios
    plain_times, sweep_times = [], []
    for _ in range(args.repeats):
        t, plain = timed(plain_loop)
        plain_times.append(t)
        t, sweep = timed(lambda: ablation_effects(loaded, batches, "zero"))
        sweep_times.append(t)
    ratios = sorted(p / s for p, s in zip(plain_times, sweep_times))
    t_plain, t_sweep = min(plain_times), min(sweep_times)
    diff = float((plain - sweep.effects).abs().max())
    print(f"model {loaded.name}: {g.n_layers} layers x {g.n_heads} heads, {args.n} examples, "
          f"batch {args.batch_size}, {args.threads} threads, device {args.device}, {args.repeats} rounds")
    print(f"exact zero-ablation of all {g.n_total} heads:")
    print(f"  plain nnsight loop (one trace per head): {t_plain:8.3f} s (best)")
    print(f"  restart-at-layer batched sweep:         {t_sweep:8.3f} s (best)   "
          f"(path: {sweep.path})")
    print(f"  speed-up: median {ratios[len(ratios) // 2]:.2f}x over rounds (range {ratios[0]:.2f}-{ratios[-1]:.2f}); "
          f"best/best {t_plain / t_sweep:.2f}x; max |difference| of effects: {diff:.2e}")

    pairs = organism_pairs(args.n, seed=0, function="spatial", rendering=loaded.rendering)
    pc, pk = pair_batches(option_batches(loaded, [a for a, _ in pairs], args.batch_size),
                          option_batches(loaded, [b for _, b in pairs], args.batch_size))

    def forward_only():
        with torch.no_grad():
            for b in pc:
                loaded.model(**b.inputs, use_cache=False)

    fwd_times, attr_times = [], []
    for _ in range(args.repeats):
        fwd_times.append(timed(forward_only)[0])
        attr_times.append(timed(lambda: attribution_effects(loaded, pc, pk))[0])
    equivalents = sorted(a / f for a, f in zip(attr_times, fwd_times))
    print("attribution screen (all heads, per example):")
    print(f"  one plain forward pass: {min(fwd_times):.3f} s; attribution: {min(attr_times):.3f} s (best); "
          f"median {equivalents[len(equivalents) // 2]:.2f} forward-equivalents "
          f"(range {equivalents[0]:.2f}-{equivalents[-1]:.2f})")


if __name__ == "__main__":
    main()
