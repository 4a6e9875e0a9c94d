"""Attention knockout (Geva et al. 2023; Zhang et al., CVPR 2025): cut one class of attention edges in a
window of consecutive decoder layers and measure what the answer loses.

Edge classes (query -> key; positions from the batch: image tokens, padding, the last prompt position):

    image->answer          the answer position attends to image tokens
    image->question        question tokens (text after the image, before the answer position) attend to image tokens
    question->answer       the answer position attends to question tokens
    object->answer         the answer position attends to the queried objects' patches (scenes with a layout)
    background->answer     the answer position attends to the other image tokens (the same scenes)

A token always keeps its edge to itself (a row with nothing to attend to is undefined). Cutting an edge
sets its pre-softmax logit to -inf in every head of the window's layers, in the prompt pass, through the
suite's registered attention function (so it works on every family the interventions do). Cutting
nothing is the plain forward pass, bit for bit.

    drop = metric(plain) - metric(edges cut)       per example; logit difference and accuracy
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping, Sequence

import torch

from .. import parallel
from ..sites import attention
from ..sites.attention import text_attention
from ..methods.batches import OptionBatch, metric
from ..models.loading import LoadedModel
from ..errors import InputError

EDGES = ("image->answer", "image->question", "question->answer", "object->answer", "background->answer")
NEEDS_OBJECTS = ("object->answer", "background->answer")


def windows(n_layers: int, size: int) -> list[tuple[int, int]]:
    """Sliding windows ``[start, end)`` of ``size`` consecutive layers, stride 1."""
    if not 1 <= size <= n_layers:
        raise InputError(f"window size must be 1..{n_layers} (the model's layers), got {size}")
    return [(start, start + size) for start in range(n_layers - size + 1)]


def edge_mask(edge: str, image: torch.Tensor, attention_mask: torch.Tensor,
              objects: torch.Tensor | None = None) -> torch.Tensor:
    """Bool ``[B, S, S]``: True where query q may not attend to key k for this edge class.

    ``image``: ``[B, S]`` image-token mask; ``attention_mask``: ``[B, S]`` (0 = padding); ``objects``:
    ``[B, S]`` the queried objects' image tokens (for the object/background classes)."""
    if edge not in EDGES:
        raise InputError(f"unknown edge class {edge!r}; choose from {', '.join(EDGES)}")
    real = attention_mask.bool()
    B, S = image.shape
    last = torch.zeros(B, S, dtype=torch.bool, device=image.device)
    last[:, -1] = True
    after_image = (image.long().cumsum(1) > 0) & ~image  # text after the first image token
    question = after_image & real & ~last
    if edge in NEEDS_OBJECTS:
        if objects is None:
            raise InputError(f"{edge} needs the objects' image tokens (a dataset with scene layouts)")
        keys = objects & image if edge == "object->answer" else image & ~objects
    else:
        keys = image if edge.startswith("image") else question
    queries = question if edge == "image->question" else last
    blocked = queries[:, :, None] & keys[:, None, :]  # [B, Q, K]
    return blocked & ~torch.eye(S, dtype=torch.bool, device=image.device)[None]


@contextmanager
def knockout(loaded: LoadedModel, layers: Sequence[int], blocked: torch.Tensor):
    """Cut ``blocked [B, S, S]`` edges in ``layers`` for the block (prompt passes of this batch)."""
    for layer in layers:
        loaded.geometry.check_head(layer, 0)
    with text_attention(loaded, attention.register()), \
            attention.blocking(attention.BlockSpec(frozenset(layers), blocked)):
        yield


def object_positions(loaded: LoadedModel, batch: OptionBatch) -> torch.Tensor | None:
    """``[B, 2]`` sequence positions of each example's subject and reference object (in that order), from
    ``meta["layout"]`` (organism scenes: a GRID x GRID grid of cells, drawn with the model's rendering).
    The image tokens must form a square grid in raster order over the whole image; a cell maps to the
    token under the centre of the patch its object is drawn in. None when an example has no layout or
    its image tokens are not a square grid."""
    rendering = loaded.rendering

    def token(index: int, side: int) -> int:  # the token row (column) under a cell row's (column's) object patch
        return rendering.centre(index) * side // rendering.image_size

    image = loaded.image_token_mask(batch.inputs)
    out = []
    for row, example in enumerate(batch.examples):
        layout = example.meta.get("layout")
        n_image = int(image[row].sum())
        side = int(round(n_image ** 0.5))
        if not layout or side * side != n_image:
            return None
        positions = image[row].nonzero()[:, 0]  # [n_image] in raster order
        cells = [(token(r, side), token(c, side)) for _, r, c in layout[:2]]
        out.append([int(positions[r * side + c]) for r, c in cells])
    return torch.tensor(out, device=image.device)


def object_tokens(loaded: LoadedModel, batch: OptionBatch) -> torch.Tensor | None:
    """``[B, S]`` bool: the subject's and the reference object's image tokens (see ``object_positions``)."""
    positions = object_positions(loaded, batch)
    if positions is None:
        return None
    out = torch.zeros_like(loaded.image_token_mask(batch.inputs))
    out.scatter_(1, positions, True)
    return out


def knockout_effects(loaded: LoadedModel, batches: Sequence[OptionBatch], edge: str, layers: Sequence[int],
                     metrics: Sequence[str] = ("logit_diff",), plain: dict | None = None) -> dict | None:
    """``{metric: per-example drop [N]}`` with ``edge`` cut in ``layers``, every metric from one cut pass per
    batch; None when the batches cannot say which tokens the edge class means (objects without a layout).
    ``plain``: a dict the caller keeps across calls, holding each batch's uncut last-position logits."""
    plain = {} if plain is None else plain

    def one(index: int) -> dict | None:
        batch = batches[index]
        inputs: Mapping[str, torch.Tensor] = batch.inputs
        objects = object_tokens(loaded, batch) if edge in NEEDS_OBJECTS else None
        if edge in NEEDS_OBJECTS and objects is None:
            return None
        blocked = edge_mask(edge, loaded.image_token_mask(inputs), inputs["attention_mask"], objects)
        with torch.no_grad():
            if index not in plain:
                plain[index] = loaded.last_logits(inputs)
            with knockout(loaded, layers, blocked):
                cut = loaded.last_logits(inputs)
        return {m: (metric(plain[index], batch.option_ids, batch.answer, m)
                    - metric(cut, batch.option_ids, batch.answer, m)).cpu() for m in metrics}  # each [B]

    done = parallel.map_batches(one, range(len(batches)), f"knockout {edge}")
    if any(d is None for d in done):
        return None
    return {m: torch.cat([d[m] for d in done]) for m in metrics}


def knockout_drops(loaded: LoadedModel, batches: Sequence[OptionBatch], edge: str, layers: Sequence[int],
                   metric_name: str = "logit_diff") -> torch.Tensor | None:
    """Per-example drop ``[N]`` of one metric (see ``knockout_effects``); None without object positions."""
    effects = knockout_effects(loaded, batches, edge, layers, (metric_name,))
    return None if effects is None else effects[metric_name]
