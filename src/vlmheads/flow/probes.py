"""Where the relation is decodable: linear probes through every layer of the vision encoder and the decoder.

For each example the label is the scene's relation (left / right / above / below); the features are

    vision encoder, layer l:  the subject's and the reference's patch states side by side, the mean of
                              the other (background) patches, and of all patches (when the tower returns
                              per-layer states for exactly the image tokens' patches, CLS or not)
    decoder, layer l:         the residual stream at the answer position, the two objects' image tokens
                              side by side, the mean over the background image tokens

A multinomial logistic probe per (site, layer, position) is trained on 70% of the examples and scored
on the other 30%: accuracy with a bootstrap 95% interval over the held-out examples, beside chance (the
most frequent relation's share). Descriptive: it says where the relation can be read, the knockout
says where it is used.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import parallel
from ..methods.batches import OptionBatch
from ..methods.probing import fit_softmax_probe
from ..methods.selection import accuracy_summary
from ..models.adapter import resolve
from ..models.loading import LoadedModel
from .knockout import object_positions


def _pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states [B, T, D]`` over ``mask [B, T]`` per row: ``[B, D]``."""
    m = mask.float()[..., None]
    return (states.float() * m).sum(1) / m.sum(1).clamp(min=1)


def _pair(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``[B, 2 * D]``: the states at each row's two ``positions [B, 2]``, subject first."""
    picked = states.gather(1, positions[..., None].expand(-1, -1, states.shape[-1]))  # [B, 2, D]
    return picked.float().flatten(1)


def decoder_features(loaded: LoadedModel, batch: OptionBatch, positions: torch.Tensor | None) -> dict:
    """``{(layer, position): [B, features]}`` for the decoder's residual stream (layer 0 = embeddings);
    the objects and the background only with ``positions``."""
    with torch.no_grad():
        out = loaded.model(**batch.inputs, output_hidden_states=True, use_cache=False)
    image = loaded.image_token_mask(batch.inputs)
    feats = {}
    for layer, h in enumerate(out.hidden_states):  # L + 1 x [B, S, hidden]
        feats[(layer, "answer")] = h[:, -1].float()
        if positions is not None:
            objects = torch.zeros_like(image).scatter_(1, positions, True)
            feats[(layer, "objects")] = _pair(h, positions)
            feats[(layer, "background")] = _pool(h, image & ~objects)
    return feats


def vision_features(loaded: LoadedModel, batch: OptionBatch, positions: torch.Tensor | None) -> dict | None:
    """``{(layer, position): [B, D]}`` from the vision tower's per-layer states; None where the tower's
    patches do not map one to one onto the image tokens (merged patches, tiles)."""
    tower = resolve(loaded.model, loaded.adapter.vision_tower)
    pixels = batch.inputs.get("pixel_values")
    if pixels is None:
        return None
    try:
        with torch.no_grad():
            states = tower(pixels, output_hidden_states=True).hidden_states
    except (TypeError, RuntimeError, ValueError, AttributeError):
        return None
    image = loaded.image_token_mask(batch.inputs)
    n_image = int(image[0].sum())
    if states is None or not all(int(r.sum()) == n_image for r in image):
        return None
    extra = states[0].shape[1] - n_image  # a CLS token in front, or none
    if extra not in (0, 1) or states[0].shape[0] != image.shape[0]:
        return None
    feats = {}
    for layer, h in enumerate(states):
        patches = h[:, extra:]  # [B, n_image, D]
        if positions is not None:
            first = image.float().argmax(1)  # [B] position of each row's first image token
            patch_index = (positions - first[:, None]).to(patches.device)  # [B, 2] the objects' patches
            obj = torch.zeros(image.shape[0], n_image, dtype=torch.bool, device=patches.device)
            obj.scatter_(1, patch_index, True)
            feats[(layer, "objects")] = _pair(patches, patch_index)
            feats[(layer, "background")] = _pool(patches, ~obj)
        feats[(layer, "all patches")] = patches.float().mean(1)
    return feats


def probe_accuracy(features: torch.Tensor, labels: Sequence[str], seed: int = 0, held_out: float = 0.3,
                   steps: int = 200) -> tuple[dict, float]:
    """Held-out accuracy summary of a multinomial probe on ``features [N, D]``, and chance."""
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(l) for l in labels])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    n_test = max(4, int(round(held_out * len(y))))
    test, train = order[:n_test], order[n_test:]
    mean, std = features[train].mean(0), features[train].std(0) + 1e-6
    x = (features - mean) / std
    probe = fit_softmax_probe(x[train], y[train], len(classes), steps=steps, weight_decay=1e-2, seed=seed)
    with torch.no_grad():
        correct = (probe(x[test]).argmax(1) == y[test]).float()
    chance = float(torch.bincount(y[test], minlength=len(classes)).max()) / len(test)
    return accuracy_summary(correct, seed=seed), round(chance, 4)


def relation_probes(loaded: LoadedModel, batches: Sequence[OptionBatch], seed: int = 0) -> tuple[list[dict], str]:
    """Rows ``{site, layer, position, accuracy, ci_low, ci_high, chance, n_test}``, and a note on what was
    skipped. Without scene layouts only the positions that need none are probed (the decoder's answer
    position, the vision encoder's mean over all patches)."""
    def one(batch: OptionBatch) -> tuple[bool, dict, dict | None]:
        positions = object_positions(loaded, batch)
        v = vision_features(loaded, batch, positions)
        return (positions is None, {k: x.cpu() for k, x in decoder_features(loaded, batch, positions).items()},
                None if v is None else {k: x.cpu() for k, x in v.items()})

    decoder, vision, labels, notes = {}, {}, [], []
    for batch, (no_positions, d, v) in zip(batches, parallel.map_batches(one, batches, "relation probe features")):
        if no_positions and "layouts" not in " ".join(notes):
            notes.append("no object positions (no scene layouts, or image tokens not one square grid): "
                         "objects and background not probed")
        for key, value in d.items():
            decoder.setdefault(key, []).append(value)
        if v is None:
            if "vision" not in " ".join(notes):
                notes.append("vision encoder: its patches do not map one to one onto the image tokens")
        else:
            for key, value in v.items():
                vision.setdefault(key, []).append(value)
        labels += [e.relation for e in batch.examples]
    if len(set(labels)) < 2:
        return [], "probes need examples of at least two relations"
    rows = []
    vision_ok = all(len(parts) == len(batches) for parts in vision.values())
    for site, table in (("vision", vision if vision_ok else {}), ("decoder", decoder)):
        for (layer, position), parts in table.items():
            if len(parts) != len(batches):
                continue
            summary, chance = probe_accuracy(torch.cat(parts), labels, seed=seed)
            rows.append({"site": site, "layer": layer, "position": position, "accuracy": summary["accuracy"],
                         "ci_low": summary["ci_low"], "ci_high": summary["ci_high"], "chance": chance,
                         "n_test": summary["n"]})
    return rows, "; ".join(notes)
