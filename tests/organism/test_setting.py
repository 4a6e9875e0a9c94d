"""The AdaptVis-setting measures: hand-computed statistics, and agreement with the other attention code."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data import organism_examples
from vlmheads.methods.attention import image_attention
from vlmheads.methods.batches import option_batches
from vlmheads.organism.setting import auroc, setting_measures, setting_targets, summarise_setting
from vlmheads.world.scenes import CLEAN


def test_auroc_by_hand():
    assert auroc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])) == 1.0
    assert auroc(torch.tensor([0.1]), torch.tensor([0.9])) == 0.0
    # pairs: (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) win, (0.1 vs 0.5) loss, (0.1 vs 0.2) loss -> 1.5 / 4
    assert auroc(torch.tensor([0.5, 0.1]), torch.tensor([0.5, 0.2])) == pytest.approx(0.375)
    assert auroc(torch.tensor([]), torch.tensor([0.2])) != auroc(torch.tensor([]), torch.tensor([0.2]))  # nan


@pytest.fixture(scope="module")
def measured(organism):
    examples = organism_examples(32, seed=3, function="relational", split="controlled", rendering=CLEAN)
    return examples, setting_measures(organism, examples, batch_size=16)


def test_measures_agree_with_the_locate_image_attention(organism, measured):
    examples, rows = measured
    share, _ = image_attention(organism, option_batches(organism, examples, 16))  # [L, H], mean over examples
    by_layer = torch.tensor([r["image_attention_by_layer"] for r in rows]).mean(0)  # [L]
    torch.testing.assert_close(by_layer, share.mean(1), atol=1e-3, rtol=0)
    enc = organism.encode_examples(examples[:1])
    assert rows[0]["prompt_image_share"] == pytest.approx(16 / enc["attention_mask"].sum().item())
    assert all(0 <= r["object_attention"] <= r["image_attention"] + 1e-6 for r in rows)  # objects are image tokens
    assert all(0 < r["confidence"] <= 1 for r in rows)


def test_targets_table_from_a_hand_made_accuracy_table(measured):
    _, rows = measured
    setting = summarise_setting(rows, n_boot=50)
    table = [{"function": f, "group": g, "accuracy": a} for f, g, a in [
        ("relational_reasoning", "consistent", 0.97), ("relational_reasoning", "violating", 0.70),
        ("decision_making", "consistent", 0.99), ("decision_making", "violating", 0.90),
        ("low_level_visual_perception", "all", 0.96), ("spatial_perception", "all", 0.90)]]
    targets = {t["property"]: t for t in setting_targets(table, setting)}
    assert targets["relational_reasoning: consistent - violating gap"]["value"] == pytest.approx(0.27)
    assert targets["relational_reasoning: consistent - violating gap"]["met"]
    assert not targets["decision_making: prior-violating accuracy"]["met"]  # 0.90 > 0.80
    assert not targets["spatial_perception: accuracy (all scenes)"]["met"]
    assert targets["image tokens' share of the prompt"]["value"] == setting["prompt_image_share"] < 0.75
    assert targets["relational_reasoning: confidence AUROC, correct vs wrong"]["met"] is None  # reported only
