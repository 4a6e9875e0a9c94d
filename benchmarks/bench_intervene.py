"""Benchmark: AdaptVis with the shared prompt KV cache vs a plain two-full-pass implementation.

    python benchmarks/bench_intervene.py [--n 128] [--batch-size 32] [--threads 2] [--model organism]

Both run in the same process on the same batches; the figures are the best of ``--repeats`` runs,
next to one unmodified forward pass. The two paths' logits are compared as a check.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="organism")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vlmheads.data import organism_examples
    from vlmheads.interventions import AdaptVis, adaptvis_logits
    from vlmheads.models import load_model

    loaded = load_model(args.model)
    examples = organism_examples(args.n, seed=0, function="relational", split="controlled",
                                 rendering=loaded.rendering)  # the scenes as the model was trained to see them
    batches = [loaded.encode_examples(examples[i:i + args.batch_size]) for i in range(0, args.n, args.batch_size)]
    iv = AdaptVis(0.5, 1.5, 0.95)

    def best(fn):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    def plain():
        with torch.no_grad():
            return [loaded.last_logits(b) for b in batches]

    best(plain)  # warm-up
    t_plain, _ = best(plain)
    t_two, two = best(lambda: [adaptvis_logits(loaded, b, iv, shared_prefix=False)[0] for b in batches])
    t_shared, shared = best(lambda: [adaptvis_logits(loaded, b, iv, shared_prefix=True)[0] for b in batches])
    diff = max(float((a - b).abs().max()) for a, b in zip(two, shared))
    print(f"model {loaded.name}, {args.n} examples, batch {args.batch_size}, {args.threads} threads")
    print(f"  one unmodified forward pass:      {t_plain:7.3f} s  (1.00)")
    print(f"  AdaptVis, two full passes:        {t_two:7.3f} s  ({t_two / t_plain:.2f})")
    print(f"  AdaptVis, shared prompt KV cache: {t_shared:7.3f} s  ({t_shared / t_plain:.2f})")
    print(f"  speed-up {t_two / t_shared:.2f}x; max |logit difference| {diff:.1e}")


if __name__ == "__main__":
    main()
