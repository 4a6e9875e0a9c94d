"""The residual site: what it reads is the model's own first hidden state, and what its hook returns is
what the first layer gets; the hook is gone after the block."""

from __future__ import annotations

import pytest
import torch

from conftest import FAMILIES
from vlmheads.sites import residual


@pytest.mark.parametrize("family", FAMILIES)
def test_read_is_the_first_layer_input_the_model_reports(tiny_models, family):
    loaded, inputs = tiny_models(family)
    with torch.no_grad():
        reported = loaded.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states[0]  # [B, S, d]
    assert torch.equal(residual.read(loaded, inputs), reported)


def test_the_hook_replaces_the_input_and_is_removed_after_the_block(organism):
    inputs = organism.encode_examples(organism.examples(2, seed=3, function="spatial", split="controlled"))
    with torch.no_grad():
        plain = organism.last_logits(inputs)
        with residual.hook(organism, lambda hidden: None):  # None: leave the input as it is
            assert torch.equal(organism.last_logits(inputs), plain)
        with residual.hook(organism, torch.zeros_like):
            zeroed = organism.last_logits(inputs)
        assert not torch.equal(zeroed, plain)
        assert torch.equal(organism.last_logits(inputs), plain)  # removed on exit
    with pytest.raises(RuntimeError, match="inside"), residual.hook(organism, torch.zeros_like):
        raise RuntimeError("inside")
    with torch.no_grad():
        assert torch.equal(organism.last_logits(inputs), plain)  # removed on error too
