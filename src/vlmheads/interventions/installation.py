"""``Installation``: what interventions install into during one ``apply`` block, and all it undoes on exit.

The few ways an intervention can act:

    head_hook(layer, fn)       fn(z) edits the head outputs of one layer (``vlmheads.site.hook``)
    scale_attention(...)       switch the text decoder to the registered ``vlmheads_scaled`` attention
                               and scale the last prompt query's logits over the image keys (by alpha,
                               or by seeded random factors: the random-attention control)
    image_hook(fn)             hidden = fn(hidden, image_mask) at the first decoder layer's input
    confidence(inputs)         top-1 probability of the first answer token from an unmodified pass
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Mapping

import torch

from ..errors import InputError
from ..models.loading import LoadedModel
from ..sites import attention, residual
from ..sites import heads as site
from ..sites.attention import scale_spec, text_attention


class InterventionError(InputError):
    """An intervention's parameters, or their fit to a model, are wrong."""


class Installation:
    """What interventions install into during one ``apply`` block; everything is undone by ``stack``."""

    def __init__(self, loaded: LoadedModel, stack: ExitStack, means: torch.Tensor | None):
        self.loaded, self.stack, self.means = loaded, stack, means
        self.image: torch.Tensor | None = None  # [B, S] image-token mask of the batch being run
        self.busy = False  # inside a confidence pass: image hooks stay out of it
        self.needs_batch = False
        self._scaler: tuple[object, Callable, object, object] | None = None
        self.check_after: Callable[[], None] | None = None  # run when the block ends without an error

    def head_hook(self, layer: int, fn: site.ZFn) -> None:
        self.stack.enter_context(site.hook(self.loaded, layer, fn, clone=True))

    def scale_attention(self, owner, alpha_for: Callable, heads, noise: tuple[float, int] | None = None) -> None:
        if self._scaler is not None:
            raise InterventionError(f"only one attention-logit intervention (ScalingVis, AdaptVis or RandomScaling) at a time: "
                                    f"{type(self._scaler[0]).__name__} and {type(owner).__name__} were given")
        self._scaler = (owner, alpha_for, heads, noise)
        self.needs_batch = True
        self.stack.enter_context(text_attention(self.loaded, attention.register()))
        self._watch_for_no_op(type(owner).__name__)

    def _watch_for_no_op(self, name: str) -> None:
        """After the block: if the model ran but the scaled attention never did, the switch changed nothing
        (a model whose text decoder does not take the registered attention): an error, not a silent no-op."""
        forwards = [0]
        handle = self.loaded.model.register_forward_pre_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
        self.stack.callback(handle.remove)
        before = attention.CALLS[0]
        self.check_after = lambda: no_op_check(self.loaded, name, forwards[0], attention.CALLS[0] - before)

    def image_hook(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        """hidden = fn(hidden, image_mask) at the residual site (the first decoder layer's input) of each
        prompt pass; decoding steps and confidence passes are left alone."""
        self.needs_batch = True

        def on_prompt(hidden):
            if self.busy or self.image is None or hidden.shape[:2] != self.image.shape:
                return None  # a decoding step (the image is in the cache already) or a confidence pass
            return fn(hidden, self.image)

        self.stack.enter_context(residual.hook(self.loaded, on_prompt))

    def confidence(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Top-1 probability ``[B]`` of the first answer token from a pass without attention scaling."""
        self.busy = True
        try:
            with torch.no_grad(), attention.scaling(None):
                plain = {k: v for k, v in inputs.items() if k not in ("past_key_values", "use_cache")}
                first = self.loaded.last_logits(plain).float()
        finally:
            self.busy = False
        return first.softmax(-1).max(-1).values

    def prepare(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Set the image mask (and the scaling spec) for a batch: its prompt, before any decoding step."""
        self.image = self.loaded.image_token_mask(inputs)
        if self._scaler is not None:
            _, alpha_for, heads, noise = self._scaler
            attention._SPEC.set(scale_spec(self.loaded, inputs, alpha_for(inputs), heads, noise))

    def watch_calls(self) -> None:
        """Prepare each forward call's own batch (``input_ids`` of a prompt; decoding steps keep the mask)."""
        def from_call(mod, args, kwargs):
            if self.busy:
                return None
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                raise InterventionError("these interventions find the image tokens in input_ids; pass input_ids "
                                        "or apply(..., inputs=inputs)")
            if ids.shape[1] > 1 or self.image is None:
                self.prepare({**kwargs, "input_ids": ids})
            return None

        handle = self.loaded.model.register_forward_pre_hook(from_call, with_kwargs=True)
        self.stack.callback(handle.remove)


def no_op_check(loaded: LoadedModel, name: str, forwards: int, scaled_calls: int) -> None:
    if forwards and not scaled_calls:
        raise InterventionError(
            f"{name} changed nothing on {loaded.name}: the model ran {forwards} time(s) but its text decoder never "
            f"called the scaled attention (its config has no separate text_config, or its attention modules do "
            f"not dispatch through transformers' AttentionInterface); this family cannot take attention-logit "
            f"interventions yet")
