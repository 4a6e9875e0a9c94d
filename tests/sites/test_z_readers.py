"""Every reader of the head outputs z [B, S, H, D] returns what the nnsight view reads (``vlmheads.tracing``,
the oracle): the head site's ``read``, attribution patching's pass (with and without its gradient graph)
and the layer sweep's recording, on every tiny family."""

from __future__ import annotations

import pytest
import torch

from conftest import FAMILIES
from vlmheads import site
from vlmheads.methods.attribution import _z_pass
from vlmheads.methods.sweep import LayerSweep
from vlmheads.tracing import read_heads


@pytest.mark.parametrize("family", FAMILIES)
def test_every_z_reader_is_the_nnsight_view(tiny_models, family):
    loaded, inputs = tiny_models(family)
    n_layers = loaded.geometry.n_layers
    traced = read_heads(loaded, inputs)  # {layer: [B, S, H, D]}
    readers = {
        "site.read": site.read(loaded, inputs)[0],
        "attribution, no graph": dict(enumerate(_z_pass(loaded, inputs, grad=False)[0])),
        "attribution, with graph": {k: v.detach() for k, v in enumerate(_z_pass(loaded, inputs, grad=True)[0])},
        "LayerSweep": dict(enumerate(LayerSweep(loaded, inputs, check=False).z)),
    }
    for name, z in readers.items():
        assert sorted(z) == list(range(n_layers)), name
        for layer in range(n_layers):
            assert z[layer].shape == traced[layer].shape, (name, layer)
            torch.testing.assert_close(z[layer], traced[layer], rtol=0, atol=0, msg=f"{name}, layer {layer}")
