"""One generic loop over heads, and its thin variants: ablation and activation patching.

``head_sweep`` replaces one head's output at a time (all positions) and measures the metric at the
answer position; a variant only says what the head's output becomes:

    ablation "zero"      0 (CogVSR's masking, a scale of 1e-3, is this case up to 0.1%)
    ablation "mean"      the head's mean output over a reference set (all non-pad positions)
    ablation "resample"  the head's output on another example of the batch (rows rolled by one)
    patching "noising"   clean run, the head's output from the corrupted run
    patching "denoising" corrupted run, the head's output from the clean run

Effects are per example, ``[n_examples, n_layers, n_heads]``: metric(base) - metric(edited), so a
head whose removal hurts has a positive effect. Denoising reports metric(edited) - metric(base)
instead (what restoring the head recovers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .. import site
from ..models.loading import LoadedModel
from .batches import OptionBatch, metric
from .sweep import PATHS, LayerSweep

ABLATIONS = site.ABLATIONS
PATCH_DIRECTIONS = ("noising", "denoising")
# (layer, head, sweep of the base batch, batch index) -> replacement broadcastable to [B, S, head_dim]
Replacement = Callable[[int, int, LayerSweep, int], torch.Tensor]


@dataclass
class SweepResult:
    effects: torch.Tensor  # [n_examples, n_layers, n_heads]
    base: torch.Tensor  # [n_examples] metric without edits
    path: str  # the slowest path any batch ran: "fast" (restart at o_proj), "layers" (whole-layer calls) or "full"


def head_sweep(loaded: LoadedModel, batches: Sequence[OptionBatch], replace: Replacement,
               metric_name: str = "logit_diff", heads_per_pass: int | None = None, sign: float = 1.0,
               rows_per_pass: int | None = None, progress: Callable[[str], None] | None = None,
               heads: Sequence[tuple[int, int]] | None = None) -> SweepResult:
    """``rows_per_pass``: rows (examples x edited copies) per forward pass; default 64 on CPU, 1024 on
    accelerators. ``heads``: sweep only these (layer, head) pairs; the others' effects are NaN (not computed),
    and layers without a chosen head are not run at all."""
    g = loaded.geometry
    chosen: dict[int, list[int]] = {}
    for layer, head in (heads if heads is not None else [(l, h) for l in range(g.n_layers) for h in range(g.n_heads)]):
        g.check_head(layer, head)
        chosen.setdefault(layer, []).append(head)
    per_pass = heads_per_pass or g.n_heads
    if rows_per_pass is None:
        rows_per_pass = 64 if loaded.device.type == "cpu" else 1024
    effects, bases, paths = [], [], []
    for b_index, batch in enumerate(batches):
        sweep = LayerSweep(loaded, batch.inputs)
        paths.append(sweep.path)
        base = metric(sweep.logits, batch.option_ids, batch.answer, metric_name)  # [B]
        out = torch.full((batch.size, g.n_layers, g.n_heads), float("nan")) if heads is not None else \
            torch.zeros(batch.size, g.n_layers, g.n_heads)
        B = batch.size
        for layer in sorted(chosen):
            layer_heads = sorted(set(chosen[layer]))
            for start in range(0, len(layer_heads), per_pass):
                chunk = layer_heads[start:start + per_pass]
                values = [replace(layer, h, sweep, b_index) for h in chunk]

                def make_edit(rows, chunk=chunk, values=values):
                    n = len(rows)
                    picked = [v[rows] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == B else v
                              for v in values]

                    def edit(z):
                        for c, (h, v) in enumerate(zip(chunk, picked)):
                            z[c * n:(c + 1) * n, :, h] = v
                    return edit

                logits = sweep.run_chunked(layer, make_edit, len(chunk), rows_per_pass)  # [copies, B, vocab]
                edited = metric(logits.flatten(0, 1), batch.option_ids, batch.answer, metric_name).view(len(chunk), B)
                out[:, layer, chunk] = (sign * (base[None] - edited)).T.cpu()
        effects.append(out)
        bases.append(base.cpu())
        if progress:
            progress(f"batch {b_index + 1}/{len(batches)}")
    return SweepResult(torch.cat(effects), torch.cat(bases), max(paths, key=PATHS.index))


def head_means(loaded: LoadedModel, batches: Sequence[OptionBatch]) -> torch.Tensor:
    """Mean head output ``[n_layers, n_heads, head_dim]`` over the batches' non-pad positions."""
    return site.head_means(loaded, [b.inputs for b in batches])


def ablation_effects(loaded: LoadedModel, batches: Sequence[OptionBatch], mode: str = "zero",
                     reference: Sequence[OptionBatch] | None = None, means: torch.Tensor | None = None,
                     **kw) -> SweepResult:
    """Per-head ablation effects; the replacement is ``vlmheads.site.ablation_value`` (zero, mean over
    ``reference`` (default: ``batches``), or resample)."""
    site.check_ablation(mode)
    if mode == "mean" and means is None:
        means = head_means(loaded, reference or batches)  # [L, H, D]
    return head_sweep(loaded, batches,
                      lambda layer, h, sweep, b: site.ablation_value(mode, sweep.z[layer][:, :, h], layer, h, means), **kw)


def pair_batches(clean: Sequence[OptionBatch], corrupt: Sequence[OptionBatch]
                 ) -> tuple[list[OptionBatch], list[OptionBatch]]:
    """Restrict both sides to two options, [clean answer, corrupted answer]: logit_diff = clean - corrupt."""
    out_clean, out_corrupt = [], []
    for c, k in zip(clean, corrupt):
        same_layout = c.inputs["input_ids"].shape == k.inputs["input_ids"].shape and \
            torch.equal(c.inputs["attention_mask"], k.inputs["attention_mask"])
        if not same_layout:
            raise ValueError("patching needs counterfactual pairs whose prompts line up token for token "
                             "(same lengths and padding)")
        ids = torch.stack([c.option_ids.gather(1, c.answer[:, None])[:, 0],
                           k.option_ids.gather(1, k.answer[:, None])[:, 0]], 1)  # [B, 2]
        zero = torch.zeros_like(c.answer)
        out_clean.append(OptionBatch(c.inputs, ids, zero, c.examples))
        out_corrupt.append(OptionBatch(k.inputs, ids, zero, k.examples))
    return out_clean, out_corrupt


def patching_effects(loaded: LoadedModel, clean: Sequence[OptionBatch], corrupt: Sequence[OptionBatch],
                     direction: str = "noising", **kw) -> SweepResult:
    """Exact activation patching per head; batches must be the output of ``pair_batches``."""
    if direction not in PATCH_DIRECTIONS:
        raise ValueError(f"unknown patching direction {direction!r}; use one of {PATCH_DIRECTIONS}")
    source_batches = corrupt if direction == "noising" else clean
    base_batches = clean if direction == "noising" else corrupt
    sources = [LayerSweep(loaded, b.inputs, check=False).z for b in source_batches]
    sign = 1.0 if direction == "noising" else -1.0
    return head_sweep(loaded, base_batches, lambda layer, h, sweep, b: sources[b][layer][:, :, h], sign=sign, **kw)
