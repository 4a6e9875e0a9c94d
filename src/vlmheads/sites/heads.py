"""The head site (``vlmheads.sites.heads``, also importable as ``vlmheads.site``): the one place where per-head attention outputs are read and changed.

Every method, check and intervention in the suite meets the model here. The site is the input of
each decoder layer's ``o_proj`` (the per-head outputs ``softmax(q k^T) v``, concatenated, before the
output projection mixes them), viewed as

    z: [batch, pos, n_heads, head_dim]      (a view of o_proj's input [batch, pos, n_heads * head_dim])

Primitives:

    head_view(geometry, x)            the view above (an nnsight envoy's input or a tensor alike)
    hook(loaded, layer, fn)           a forward pre-hook on o_proj that calls fn(z) for every call
    hooks(loaded, {layer: fn})        several at once, removed together
    read(loaded, inputs, layers)      one plain forward pass, z of the chosen layers recorded
    replace_ / scale_ / add_          edit chosen heads at chosen positions of z, in place

and the one definition of head ablation (``ablation_value``): zero, mean over a reference set, or
resample (the head's output on another example of the batch).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterable, Mapping, Sequence

import torch

from .. import parallel
from ..errors import InputError
from ..models.adapter import HeadGeometry
from ..models.loading import LoadedModel

ZFn = Callable[[torch.Tensor], "torch.Tensor | None"]  # receives z [B, S, H, D]; edits it in place
ALL = slice(None)
LAST = -1

ABLATIONS = ("zero", "mean", "resample")


class AblationError(InputError):
    """An unknown ablation mode, or a mode without what it needs."""


def head_view(geometry: HeadGeometry, x):
    """View ``[..., n_heads * head_dim]`` (an o_proj input) as ``[..., n_heads, head_dim]``."""
    return geometry.split_heads(x)


@contextmanager
def hook(loaded: LoadedModel, layer: int, fn: ZFn, clone: bool = False):
    """Call ``fn(z)`` on layer's head outputs ``z [B, S, H, D]`` in every forward call of the block.

    ``fn`` edits ``z`` in place (the edit reaches o_proj), or records it: o_proj reads exactly this
    ``z`` (flattened), so autograd can differentiate with respect to a recorded ``z``. With ``clone``
    the model's own tensor is left untouched and o_proj reads the edited copy."""
    loaded.geometry.check_head(layer, 0)
    module = loaded.adapter.o_proj_module(loaded.model, layer)
    g = loaded.geometry

    def pre_hook(mod, args):
        x = args[0]  # [B, S, H * D]
        z = head_view(g, x.clone() if clone else x)  # [B, S, H, D]
        fn(z)
        return (z.flatten(-2),) + tuple(args[1:])  # o_proj reads z itself: gradients w.r.t. z flow

    handle = module.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def hooks(loaded: LoadedModel, fns: Mapping[int, ZFn], clone: bool = False):
    """``hook`` for several layers at once; all are removed on exit, also when the body raises."""
    with ExitStack() as stack:
        for layer, fn in sorted(fns.items()):
            stack.enter_context(hook(loaded, layer, fn, clone=clone))
        yield


def read(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor], layers: Iterable[int] | None = None,
         positions=ALL) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One plain forward pass: ``({layer: z[:, positions] (a copy)}, last-position logits [B, vocab])``."""
    layers = range(loaded.geometry.n_layers) if layers is None else sorted(set(layers))
    seen: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(z):
            seen[layer] = z[:, positions].detach().clone()
        return fn

    with torch.no_grad(), hooks(loaded, {layer: keep(layer) for layer in layers}):
        logits = loaded.last_logits(inputs)
    return seen, logits


# -- edits of z [B, S, H, D], in place -----------------------------------------------------------------

def replace_(z: torch.Tensor, heads: Sequence[int], value, positions=ALL) -> None:
    """``z[:, positions, heads] = value`` (``value`` broadcasts to ``[B, n_pos, n_heads, D]``)."""
    z[:, positions, list(heads)] = value if not torch.is_tensor(value) else value.to(z.dtype)


def scale_(z: torch.Tensor, heads: Sequence[int], factor: float, positions=ALL) -> None:
    """Multiply the heads' outputs at ``positions`` by ``factor``."""
    idx = list(heads)
    z[:, positions, idx] = z[:, positions, idx] * factor


def add_(z: torch.Tensor, heads: Sequence[int], vector: torch.Tensor, positions=ALL) -> None:
    """Add ``vector`` (broadcasting to ``[B, n_pos, n_heads, D]``) to the heads' outputs at ``positions``."""
    idx = list(heads)
    z[:, positions, idx] = z[:, positions, idx] + vector.to(z.device, z.dtype)


# -- ablation, defined once -----------------------------------------------------------------------------

def check_ablation(mode: str) -> None:
    if mode not in ABLATIONS:
        raise AblationError(f"unknown ablation mode {mode!r}; use one of {', '.join(ABLATIONS)}")


def ablation_value(mode: str, z_head: torch.Tensor, layer: int, head: int,
                   means: torch.Tensor | None = None) -> torch.Tensor | float:
    """What head ``(layer, head)`` outputs when ablated, given its own outputs ``z_head [B, S, D]``:

        zero      0 (CogVSR's masking, a scale of 1e-3, is this case up to 0.1%)
        mean      its mean output over a reference set, ``means[layer, head]`` ([D], every position)
        resample  its output on another example of the batch (rows rolled by one)
    """
    check_ablation(mode)
    if mode == "mean" and means is None:
        raise AblationError("mean ablation needs the heads' mean outputs [n_layers, n_heads, head_dim] "
                            "(vlmheads.site.head_means over a reference set)")
    if mode == "zero":
        return 0.0
    if mode == "mean":
        return means[layer, head].to(z_head.device, z_head.dtype)
    return z_head.roll(1, 0).clone()


def ablate_(z: torch.Tensor, layer: int, heads: Sequence[int], mode: str, means: torch.Tensor | None = None) -> None:
    """Ablate ``heads`` of ``layer`` at every position of ``z [B, S, H, D]`` (see ``ablation_value``)."""
    for head in heads:
        z[:, :, head] = ablation_value(mode, z[:, :, head], layer, head, means)


def head_means(loaded: LoadedModel, inputs_list: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """Mean head output ``[n_layers, n_heads, head_dim]`` over the batches' non-pad positions."""
    def one(inputs) -> tuple[torch.Tensor, int]:
        z, _ = read(loaded, inputs)
        mask = inputs["attention_mask"].bool()  # [B, S]
        return torch.stack([z[layer][mask] for layer in sorted(z)]).float().sum(1).cpu(), int(mask.sum())  # [L, H, D]

    total, count = None, 0
    for s, n in parallel.map_batches(one, list(inputs_list), "head means"):  # summed in batch order on every rank
        total = s if total is None else total + s
        count += n
    if total is None:
        raise ValueError("head means need at least one batch")
    return (total / count).to(loaded.device)
