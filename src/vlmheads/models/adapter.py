"""What an adapter declares about a VLM family: where things live and the head geometry.

Adapters are data (rule: no forward code here). Every method that touches a model only resolves
the declared paths, and ``check`` refuses a model whose modules do not match the declaration.

The head site is the *input of o_proj* in each decoder layer's attention, viewed as

    [batch, pos, n_heads, head_dim]      (n_heads = query heads; o_proj.in_features = n_heads * head_dim)

With grouped-query attention (n_kv_heads < n_heads) query head h reads key/value head
``h // (n_heads // n_kv_heads)``: per-head outputs are indexed by query head, k/v by KV head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


class AdapterError(InputError):
    """A model does not match what its adapter declares."""


@dataclass(frozen=True)
class HeadGeometry:
    n_layers: int
    n_heads: int  # query heads per layer
    n_kv_heads: int  # key/value heads per layer
    head_dim: int

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def group_size(self) -> int:
        """Query heads that share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """View ``[..., n_heads * head_dim]`` (an o_proj input) as ``[..., n_heads, head_dim]``."""
        return x.view(*x.shape[:-1], self.n_heads, self.head_dim)

    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads."""
        self.check_head(0, head)
        return head // self.group_size

    def check_head(self, layer: int, head: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range: the model has {self.n_layers} layers (0..{self.n_layers - 1})")
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} out of range: each layer has {self.n_heads} heads (0..{self.n_heads - 1})")


def resolve(root, path: str):
    """Follow a dotted path (digits index into lists), on a module or an nnsight envoy alike."""
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Adapter:
    """Declarative description of one VLM family (module paths are relative to the HF model)."""

    family: str
    architectures: tuple[str, ...]  # HF class names (config.architectures) this adapter handles
    model_types: tuple[str, ...]  # config.model_type values this adapter handles
    layers: str  # the decoder's layer list
    vision_tower: str | None  # None: not found (only the probes of the vision encoder need it)
    projector: str | None
    attention: str = "self_attn"  # inside a decoder layer
    o_proj: str = "o_proj"  # inside the attention module
    # a pre-norm decoder layer's other parts, inside the layer: what the head sweep's fast path restarts
    # (``LayerParts``; a layer without them is run whole)
    input_norm: str = "input_layernorm"
    post_attention_norm: str = "post_attention_layernorm"
    mlp: str = "mlp"
    image_token_attrs: tuple[str, ...] = ("image_token_id", "image_token_index")
    lm_head: str = "lm_head"
    final_norm: str = ""  # "" = the decoder's ``norm`` beside its layer list
    derived: bool = False  # read from the model by ``vlmheads.models.generic`` (not declared by hand)
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.final_norm:  # the decoder's last norm, beside its layer list (``...layers`` -> ``...norm``)
            object.__setattr__(self, "final_norm", self.layers.rsplit(".", 1)[0] + ".norm")

    # -- geometry ---------------------------------------------------------------------------
    def geometry(self, config) -> HeadGeometry:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config.text_config
        n_heads = int(text.num_attention_heads)
        n_kv = int(getattr(text, "num_key_value_heads", None) or n_heads)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // n_heads
        if n_heads % n_kv:
            raise AdapterError(f"{self.family}: {n_heads} query heads do not split into {n_kv} key/value heads")
        return HeadGeometry(int(text.num_hidden_layers), n_heads, n_kv, int(head_dim))

    # -- module paths -------------------------------------------------------------------------
    def layer_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}"

    def attention_path(self, layer: int) -> str:
        return f"{self.layer_path(layer)}.{self.attention}"

    def o_proj_path(self, layer: int) -> str:
        return f"{self.attention_path(layer)}.{self.o_proj}"

    def o_proj_module(self, model, layer: int) -> torch.nn.Module:
        return resolve(model, self.o_proj_path(layer))

    def layer_parts(self, layer: torch.nn.Module) -> "LayerParts | None":
        """One decoder layer's parts as a pre-norm residual block, ``x + attention(input_norm(x))`` then
        ``h + mlp(post_attention_norm(h))`` (Llama, Qwen2, Idefics3's text model), by the declared names;
        None when the layer lacks one of them (it is then run whole)."""
        try:
            parts = [resolve(layer, name) for name in (self.input_norm, self.attention, self.post_attention_norm,
                                                       self.mlp)]
        except (AttributeError, IndexError):
            return None
        return LayerParts(*parts)

    def check(self, model) -> HeadGeometry:
        """Resolve every declared path and check the head geometry the config gives against the modules
        (o_proj widths, each attention's ``head_dim`` and key/value grouping); raise if off."""
        geometry = self.geometry(model.config)
        paths = (self.layers, self.vision_tower, self.projector, self.final_norm, self.lm_head)
        for path in (p for p in paths if p):
            try:
                resolve(model, path)
            except (AttributeError, IndexError) as err:
                raise AdapterError(f"{self.family} adapter: {type(model).__name__} has no module {path!r} "
                                   f"({err}); the installed transformers may lay this family out differently") from err
        n_found = len(resolve(model, self.layers))
        if n_found != geometry.n_layers:
            raise AdapterError(f"{self.family} adapter: config says {geometry.n_layers} layers, model has {n_found}")
        shapes = [self._layer_geometry(model, layer, geometry) for layer in range(geometry.n_layers)]
        if len(set(shapes)) > 1:
            first, other = shapes[0], next(s for s in shapes if s != shapes[0])
            raise AdapterError(
                f"{self.family}: per-layer head geometry (layer 0: {_shape(first)}; layer {shapes.index(other)}: "
                f"{_shape(other)}); head-level methods index every layer's heads alike, so this model is not "
                f"supported")
        if shapes[0] != (geometry.n_heads, geometry.n_kv_heads, geometry.head_dim):
            raise AdapterError(f"{self.family} adapter: the config says {_shape((geometry.n_heads, geometry.n_kv_heads, geometry.head_dim))} "
                               f"but the attention modules have {_shape(shapes[0])}")
        return geometry

    def _layer_geometry(self, model, layer: int, expected: HeadGeometry) -> tuple[int, int, int]:
        """``(n_heads, n_kv_heads, head_dim)`` read from one layer's attention module."""
        try:
            attention = resolve(model, self.attention_path(layer))
            o_proj = resolve(attention, self.o_proj)
        except (AttributeError, IndexError) as err:
            kind = type(resolve(model, self.layer_path(layer))).__name__
            raise AdapterError(f"{self.family} adapter: decoder layer {layer} ({kind}) has no "
                               f"{self.attention}.{self.o_proj} ({err})") from err
        width = getattr(o_proj, "in_features", None)
        head_dim = int(getattr(attention, "head_dim", None) or expected.head_dim)
        if width is None or width % head_dim:
            raise AdapterError(f"{self.family} adapter: layer {layer} o_proj takes {width} features, expected "
                               f"n_heads * head_dim = {expected.n_heads} * {expected.head_dim}")
        n_heads = width // head_dim
        groups = getattr(attention, "num_key_value_groups", None)
        n_kv = n_heads // int(groups) if groups else expected.n_kv_heads
        if (n_heads, head_dim) != (expected.n_heads, expected.head_dim) and head_dim == expected.head_dim:
            raise AdapterError(f"{self.family} adapter: layer {layer} o_proj takes {width} features, expected "
                               f"n_heads * head_dim = {expected.n_heads} * {expected.head_dim}")
        return n_heads, n_kv, head_dim

    # -- image tokens ---------------------------------------------------------------------------
    def image_token_id(self, config) -> int:
        for attr in self.image_token_attrs:
            value = getattr(config, attr, None)
            if value is not None:
                return int(value)
        raise AdapterError(f"{self.family}: config has none of {self.image_token_attrs}")

    def image_token_mask(self, inputs, config) -> torch.Tensor:
        """Bool ``[batch, pos]``: True where the token is an image placeholder (per row; padding moves them)."""
        ids = inputs["input_ids"]
        return ids == self.image_token_id(config)


@dataclass(frozen=True)
class LayerParts:
    """The modules of one pre-norm decoder layer (``Adapter.layer_parts``)."""

    input_norm: torch.nn.Module
    attention: torch.nn.Module
    post_attention_norm: torch.nn.Module
    mlp: torch.nn.Module


def _shape(shape: tuple[int, int, int]) -> str:
    n_heads, n_kv, head_dim = shape
    return f"{n_heads} heads ({n_kv} key/value) of dim {head_dim}"
