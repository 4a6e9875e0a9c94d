"""The hand-written true configs stay loadable: each builds at small width (every head count, image token
count, vocabulary and special id kept), saves, loads through ``load_model`` and answers an organism
question with the checkpoint's number of image tokens."""

import pytest
import torch

from vlmheads.testing.real_configs import REAL_CONFIGS, build_real

FULL = {  # (decoder hidden, layers, heads, KV heads, vocabulary; vision hidden, layers) as published
    "llava-1.5-7b": (4096, 32, 32, 32, 32064, 1024, 24),
    "qwen2.5-vl-7b": (3584, 28, 28, 4, 152064, 1280, 32),
    "internvl3-8b": (3584, 28, 28, 4, 151674, 1024, 24),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_the_full_config_has_the_published_sizes(name):
    cfg = REAL_CONFIGS[name].build_config(None, False)
    text, vision = cfg.get_text_config(), cfg.vision_config
    depth = getattr(vision, "num_hidden_layers", None) or vision.depth
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.vocab_size, vision.hidden_size, depth) == FULL[name]
    assert REAL_CONFIGS[name].heads == FULL[name][1:4]
    assert REAL_CONFIGS[name].build_config(4, False).get_text_config().num_hidden_layers == 4


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_the_small_copy_saves_loads_and_answers_with_the_real_image_token_count(name, tmp_path):
    from vlmheads.evaluation.options import score_options
    from vlmheads.models import load_model

    model, processor = build_real(name, text_layers=2, small=True)
    model.save_pretrained(tmp_path / name)
    processor.save_pretrained(tmp_path / name)
    loaded = load_model(tmp_path / name)
    layers, heads, kv = REAL_CONFIGS[name].heads
    assert (loaded.geometry.n_layers, loaded.geometry.n_heads, loaded.geometry.n_kv_heads) == (2, heads, kv)
    assert loaded.adapter.family == REAL_CONFIGS[name].family
    examples = loaded.examples(2, seed=0, function="relational")
    inputs = loaded.encode_examples(examples)
    assert loaded.image_token_mask(inputs).sum(1).tolist() == [REAL_CONFIGS[name].image_tokens] * 2
    scores = score_options(loaded, examples)
    assert len(scores) == 2 and all(torch.isfinite(torch.tensor(s.logit_diff)) for s in scores)
