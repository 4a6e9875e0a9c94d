"""The restart engine's self-check in half precision: a tolerance that follows the dtype, and the reason
whenever a path slower than "fast" is taken (bf16 once sent every real-width model down the full path)."""

from __future__ import annotations

import pytest
import torch

import vlmheads.methods.sweep as sweep_module
from vlmheads.methods.batches import option_batches
from vlmheads.methods.effects import ablation_effects
from vlmheads.methods.sweep import LayerSweep, check_tolerance
from vlmheads.models import wrap_model
from vlmheads.testing import TINY_BUILDERS
from vlmheads.world.scenes import CLEAN


def test_the_tolerance_by_hand():
    assert check_tolerance(torch.float32, torch.tensor([100.0])) == (1e-4, 1e-4)
    # bf16: 4 rounding units of 2^-7 at the logits' scale (LLaVA-1.5-7B's width: 5.65625)
    assert check_tolerance(torch.bfloat16, torch.tensor([-5.65625, 2.0])) == (4 * 2 ** -7 * 5.65625, 0.0)
    assert check_tolerance(torch.float16, torch.tensor([0.5])) == (4 * 2 ** -10, 0.0)  # scale at least 1


@pytest.fixture()
def bf16_llava():
    model, _, processor = TINY_BUILDERS["llava"](gqa=True)
    loaded = wrap_model(model.to(torch.bfloat16), processor, name="tiny-llava-bf16")
    batch = option_batches(loaded, loaded.examples(4, seed=2, function="spatial"), 4)[0]
    assert loaded.rendering == CLEAN
    return loaded, batch


def _offset_restarts(monkeypatch, offset: float) -> None:
    """Every restarted pass comes out ``offset`` away from the plain pass (rounding, or a broken restart)."""
    real = LayerSweep.run_from

    def shifted(self, layer, edit, copies):
        return real(self, layer, edit, copies) + offset

    monkeypatch.setattr(LayerSweep, "run_from", shifted)
    sweep_module._CHECKED.clear()


def test_a_restart_off_by_bf16_rounding_keeps_the_fast_path(bf16_llava, monkeypatch):
    loaded, batch = bf16_llava
    scale = float(LayerSweep(loaded, batch.inputs, check=False).logits.abs().max())
    _offset_restarts(monkeypatch, 0.5 * 2 ** -7 * max(1.0, scale))  # half a rounding unit: 1e-4 refused it
    sweep = LayerSweep(loaded, batch.inputs)
    assert sweep.path == "fast" and sweep.path_note is None


def test_a_restart_that_moves_the_logits_falls_back_and_says_why(bf16_llava, monkeypatch):
    loaded, batch = bf16_llava
    _offset_restarts(monkeypatch, 3.0)
    result = ablation_effects(loaded, [batch])
    assert result.path == "full"
    assert result.path_note.startswith("fast (last query only): restarting at layer 0 moved the logits by up to 3")
    assert "in bfloat16" in result.path_note and "layers: restarting at layer 0" in result.path_note
    sweep_module._CHECKED.clear()


def test_batch_axes_are_declared_where_the_size_would_mislead():
    """M-RoPE position ids [3, B, S] at a batch of 3: repeated along the batch (axis 1), not along the
    three position streams, which the size guess took (only the self-check caught it, by a slower path)."""
    from vlmheads.methods.sweep import _repeat, _take

    ids = torch.arange(3 * 3 * 5).view(3, 3, 5)  # [streams, B=3, S]
    cos = torch.randn(3, 3, 5, 4)  # [streams, B=3, S, D]
    mask = torch.zeros(3, 1, 5, 5)  # [B, 1, Q, K]
    shared = torch.randn(1, 5, 4)  # one row for the whole batch
    out = _repeat({"position_ids": ids, "position_embeddings": (cos, cos), "attention_mask": mask, "x": shared},
                  batch=3, copies=2)
    assert out["position_ids"].shape == (3, 6, 5) and torch.equal(out["position_ids"][:, 3:], ids)
    assert out["position_embeddings"][0].shape == (3, 6, 5, 4) and out["attention_mask"].shape == (6, 1, 5, 5)
    assert out["x"] is shared
    rows = torch.tensor([2, 0])
    taken = _take({"position_ids": ids, "hidden": torch.arange(3)[:, None]}, batch=3, rows=rows)
    assert torch.equal(taken["position_ids"], ids[:, [2, 0]]) and taken["hidden"].flatten().tolist() == [2, 0]
    # merged cos [B, S, D] (this transformers release) stays on the size rule: axis 0
    assert _repeat({"position_embeddings": (torch.zeros(3, 5, 4),)}, batch=3, copies=2)["position_embeddings"][0] \
        .shape == (6, 5, 4)


def test_a_guessed_batch_axis_is_logged_once(caplog):
    import logging

    from vlmheads.methods import sweep

    sweep._GUESSED.clear()
    with caplog.at_level(logging.INFO, logger="vlmheads.methods.sweep"):
        for _ in range(2):
            sweep._repeat({"attention_mask": torch.zeros(3, 1, 5, 5), "position_ids": torch.zeros(3, 3, 5)},
                          batch=3, copies=2)
    guessed = [r.getMessage() for r in caplog.records]
    assert len(guessed) == 1 and "attention_mask (3, 1, 5, 5) at batch 3 guessed from its sizes: axis 0" in guessed[0]
