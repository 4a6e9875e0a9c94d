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

from .. import parallel
from ..sites import heads as site
from ..models.loading import LoadedModel
from .batches import OptionBatch, metric
from .sweep import PATHS, LayerSweep
from ..errors import InputError

ABLATIONS = site.ABLATIONS
PATCH_DIRECTIONS = ("noising", "denoising")
# (layer, head, sweep of the base batch, batch index) -> replacement broadcastable to [B, S, head_dim]
Replacement = Callable[[int, int, LayerSweep, int], torch.Tensor]


@dataclass
class SweepResult:
    effects: torch.Tensor  # [n_examples, n_layers, n_heads]
    base: torch.Tensor  # [n_examples] metric without edits
    path: str  # the slowest path any batch ran: "fast" (restart at o_proj), "layers" (whole-layer calls) or "full"
    path_note: str | None = None  # why that path and not "fast" (LayerSweep.path_note)


def head_sweep(loaded: LoadedModel, batches: Sequence[OptionBatch], replace: Replacement,
               metric_name: str = "logit_diff", heads_per_pass: int | None = None, sign: float = 1.0,
               rows_per_pass: int | None = None, progress: Callable[[str], None] | None = None,
               heads: Sequence[tuple[int, int]] | None = None) -> SweepResult:
    """``rows_per_pass``: rows (examples x edited copies) per forward pass; default ``pass_rows`` (64 on CPU,
    from free memory on accelerators), halved and retried whenever a pass runs out of memory. ``heads``:
    sweep only these (layer, head) pairs; the others' effects are NaN (not computed), and layers without a
    chosen head are not run at all."""
    g = loaded.geometry
    chosen: dict[int, list[int]] = {}
    for layer, head in (heads if heads is not None else [(l, h) for l in range(g.n_layers) for h in range(g.n_heads)]):
        g.check_head(layer, head)
        chosen.setdefault(layer, []).append(head)
    budget = PassBudget(rows_per_pass or pass_rows(loaded, int(batches[0].inputs["input_ids"].shape[1])))

    def one_batch(b_index: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        batch = batches[b_index]
        sweep = LayerSweep(loaded, batch.inputs)
        base = metric(sweep.logits, batch.option_ids, batch.answer, metric_name)  # [B]
        out = torch.full((batch.size, g.n_layers, g.n_heads), float("nan")) if heads is not None else \
            torch.zeros(batch.size, g.n_layers, g.n_heads)
        B = batch.size
        for layer in sorted(chosen):
            todo = sorted(set(chosen[layer]))
            while todo:
                chunk = todo[:min(heads_per_pass or g.n_heads, budget.rows)]  # never more copies than rows
                values = [replace(layer, h, sweep, b_index) for h in chunk]

                def make_edit(rows, chunk=chunk, values=values):
                    n = len(rows)
                    picked = [v[rows] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == B else v
                              for v in values]

                    def edit(z):
                        for c, (h, v) in enumerate(zip(chunk, picked)):
                            z[c * n:(c + 1) * n, :, h] = v
                    return edit

                try:
                    logits = sweep.run_chunked(layer, make_edit, len(chunk), budget.rows)  # [copies, B, vocab]
                except torch.OutOfMemoryError:
                    budget.halve(loaded)
                    continue
                edited = metric(logits.flatten(0, 1), batch.option_ids, batch.answer, metric_name).view(len(chunk), B)
                out[:, layer, chunk] = (sign * (base[None] - edited)).T.cpu()
                todo = todo[len(chunk):]
        if progress:
            progress(f"batch {b_index + 1}/{len(batches)}")
        return out, base.cpu(), (sweep.path, sweep.path_note)

    # one batch is the unit of work: each rank sweeps its share, every rank gets all batches in order
    done = parallel.map_batches(one_batch, range(len(batches)), "head sweep")
    path, note = max((d[2] for d in done), key=lambda p: PATHS.index(p[0]))
    return SweepResult(torch.cat([d[0] for d in done]), torch.cat([d[1] for d in done]), path, note)


class PassBudget:
    """Rows per restarted pass, halved on out-of-memory (down to one row, then the error stands)."""

    def __init__(self, rows: int) -> None:
        self.rows = max(1, int(rows))
        self.halvings = 0

    def halve(self, loaded: LoadedModel) -> None:
        if self.rows == 1:
            raise torch.OutOfMemoryError(f"{loaded.name}: one row per pass does not fit in memory; use a smaller "
                                         f"--batch-size, a lower --dtype, or --device-map auto over more devices")
        self.rows //= 2
        self.halvings += 1
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def pass_rows(loaded: LoadedModel, seq_len: int, share: float = 0.5) -> int:
    """Rows per restarted pass: 64 on CPU (measured fastest there); on CUDA, what ``share`` of the free
    memory holds, by a per-row estimate of one decoder layer's activations in flight (residual, attention
    and MLP activations, and eager attention's [heads, seq, seq] scores and probabilities in float32)."""
    if loaded.device.type != "cuda":
        return 64
    free = free_memory(loaded)
    text = loaded.config.get_text_config()
    size = torch.finfo(loaded.dtype).bits // 8
    per_row = seq_len * (6 * text.hidden_size + 3 * getattr(text, "intermediate_size", 4 * text.hidden_size)) * size \
        + 2 * loaded.geometry.n_heads * seq_len * seq_len * 4
    return int(max(1, min(4096, share * free // per_row)))


def out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError that says so)."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def free_memory(loaded: LoadedModel) -> int:
    """Bytes free where the model computes: CUDA's free memory, else the machine's available memory."""
    if loaded.device.type == "cuda":
        return int(torch.cuda.mem_get_info(loaded.device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 << 30


def backward_rows(loaded: LoadedModel, seq_len: int, share: float = 0.5) -> int:
    """Rows per forward + backward pass that ``share`` of the free memory holds, by a per-row estimate of
    what autograd keeps for every decoder layer (the residual stream, attention and MLP activations, and
    eager attention's ``[heads, seq, seq]`` scores and probabilities in float32)."""
    text = loaded.config.get_text_config()
    size = torch.finfo(loaded.dtype).bits // 8
    per_layer = seq_len * (8 * text.hidden_size + 4 * getattr(text, "intermediate_size", 4 * text.hidden_size)) * size \
        + 2 * loaded.geometry.n_heads * seq_len * seq_len * 4
    return int(max(1, share * free_memory(loaded) // (loaded.geometry.n_layers * per_layer)))


def by_sub_batches(loaded: LoadedModel, batch_size: int, seq_len: int, compute: Callable[[list[int]], torch.Tensor],
                   rows: int | None = None, whole: bool = False) -> torch.Tensor:
    """``compute(rows)`` over sub-batches of a batch's rows, joined along dim 0: ``rows`` rows at a time
    (default: what half the free memory holds for a forward + backward, ``backward_rows``), halved and
    retried when a sub-batch runs out of memory (down to one row, then the error names the fix); any
    other error is raised as it is. ``whole``: the batch at once (rows that depend on each other)."""
    budget = PassBudget(batch_size if whole else min(batch_size, rows or backward_rows(loaded, seq_len)))
    start, parts = 0, []
    while start < batch_size:
        take = list(range(start, min(batch_size, start + budget.rows)))
        try:
            parts.append(compute(take))
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not out_of_memory(err) or whole:
                raise
            budget.halve(loaded)
            continue
        start += len(take)
    return torch.cat(parts)


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
            raise InputError("patching needs counterfactual pairs whose prompts line up token for token "
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
        raise InputError(f"unknown patching direction {direction!r}; use one of {PATCH_DIRECTIONS}")
    source_batches = corrupt if direction == "noising" else clean
    base_batches = clean if direction == "noising" else corrupt
    sign = 1.0 if direction == "noising" else -1.0
    current: dict[int, list[torch.Tensor]] = {}  # one batch's source head outputs at a time (streamed)

    def source(layer, h, sweep, b):
        if b not in current:
            current.clear()
            current[b] = LayerSweep(loaded, source_batches[b].inputs, check=False).z  # L x [B, S, H, D]
        return current[b][layer][:, :, h]

    return head_sweep(loaded, base_batches, source, sign=sign, **kw)
