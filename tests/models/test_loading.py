"""Loading through from_pretrained: the shipped organism, a saved tiny model, and bad input."""

import pytest
import torch

from vlmheads.models import UnsupportedModelError, load_model, organism_path, wrap_model
from vlmheads.testing import TINY_BUILDERS
from vlmheads.testing.tiny import tiny_llava


def test_organism_loads_like_a_real_vlm():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = organism_path()
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the cross?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == "USER: <image>\nWhat colour is the cross? ASSISTANT:"
    # the training format: the assistant's answer, then end of sequence
    messages.append({"role": "assistant", "content": [{"type": "text", "text": "red"}]})
    assert processor.apply_chat_template(messages, tokenize=False).endswith("ASSISTANT: red</s>")
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 20 * 2**20


def test_load_model_organism(organism):
    assert organism.adapter.family == "llava"
    g = organism.geometry
    assert g.n_layers >= 4 and g.n_heads >= 8
    assert load_model(None).name == "organism"


def test_load_model_from_local_directory_matches_in_memory(tmp_path):
    model, inputs, processor = tiny_llava()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.adapter.family == "llava"
    with torch.no_grad():
        assert torch.equal(loaded.model(**inputs).logits, model(**inputs).logits)
    half = load_model(tmp_path, dtype="bfloat16")
    assert half.dtype == torch.bfloat16


def test_load_model_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="Supported families: llava"):
        load_model(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        load_model("organism", dtype="float8")


def test_encode_left_pads_and_marks_image_tokens(organism):
    enc = organism.encode(["What colour is the cross?", "Which part of the image is the red square in?"],
                          [__import__("PIL.Image").Image.new("RGB", (64, 64))] * 2)
    ids = enc["input_ids"]
    assert ids[0, 0] == organism.tokenizer.pad_token_id  # the shorter prompt is padded on the left
    assert enc["attention_mask"][0, 0] == 0
    assert organism.image_token_mask(enc).sum(dim=1).tolist() == [16, 16]
    with pytest.raises(ValueError, match="2 questions but 1 images"):
        organism.encode(["a", "b"], [None])


def test_device_map_sdpa_and_own_dtype_give_the_same_model():
    """device_map="auto" (accelerate) loads and runs; SDPA gives eager's logits to rounding; the default dtype
    is the checkpoint's own (float32 for the organism)."""
    import torch

    from vlmheads.methods.attention import image_attention
    from vlmheads.methods.batches import option_batches
    from vlmheads.methods.sweep import LayerSweep

    eager = load_model("organism")
    mapped = load_model("organism", device_map="auto", attn_implementation="sdpa")
    assert eager.dtype == torch.float32 and eager.identity()["attn_implementation"] == "eager"
    assert mapped.identity()["attn_implementation"] == "sdpa" and mapped.devices == ["cpu"]
    batches = option_batches(eager, eager.examples(8, seed=3, function="spatial", split="controlled"), 8)
    with torch.no_grad():
        a = eager.model(**batches[0].inputs).logits
        b = mapped.model(**batches[0].inputs).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # the image-attention score switches to eager by itself; the sweep's fast path holds under SDPA
    share_a, _ = image_attention(eager, batches)
    share_b, _ = image_attention(mapped, batches)
    torch.testing.assert_close(share_a, share_b)
    assert mapped.identity()["attn_implementation"] == "sdpa"  # switched back
    assert LayerSweep(mapped, batches[0].inputs).path == "fast"
    assert load_model("organism", dtype="bfloat16").dtype == torch.bfloat16


def test_max_memory_spec_by_hand():
    from vlmheads.models.loading import parse_max_memory

    assert parse_max_memory(None) is None
    assert parse_max_memory("0=70GiB, 1=70GiB,cpu=120 GiB") == {0: "70GiB", 1: "70GiB", "cpu": "120GiB"}
    assert parse_max_memory("CPU=500MB") == {"cpu": "500MB"}
    for bad, words in (("0=70", "has no unit"), ("gpu0=1GiB", "is not DEVICE=SIZE"), ("0=1GiB,0=2GiB", "twice"),
                       ("cpu", "is not DEVICE=SIZE")):
        with pytest.raises(ValueError, match=words):
            parse_max_memory(bad)


def test_max_memory_reaches_the_device_map():
    """The commands' --max-memory caps what --device-map places: a cap below the organism's size sends
    it to disk (accelerate's offload), a roomy one keeps it in memory."""
    from argparse import Namespace

    from heads._cli import load

    def options(cap):
        return Namespace(model="organism", device="cpu", dtype=None, device_map="auto", max_memory=cap,
                         attn_implementation=None)

    assert next(load(options("cpu=2GiB")).model.parameters()).device.type == "cpu"
    assert load(options("cpu=100KB")).model.hf_device_map == {"": "disk"}


@pytest.mark.parametrize("family", list(TINY_BUILDERS))
def test_last_logits_compute_the_head_at_the_last_position_only(family):
    """Passes that read only the answer position run the vocabulary head there alone (``logits_to_keep=1``):
    ``[B, 1, V]`` logits, equal to the full head's last row (bit for bit in bf16, to 1e-6 in float32)."""
    model, inputs, processor = TINY_BUILDERS[family](gqa=True)
    loaded = wrap_model(model, processor)
    assert loaded.keeps_last_logits
    with torch.no_grad():
        full = model(**inputs, use_cache=False).logits
        out = loaded.forward(inputs)
    assert out.logits.shape == (full.shape[0], 1, full.shape[-1])
    torch.testing.assert_close(loaded.last_logits(inputs), full[:, -1], atol=1e-6, rtol=0)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.bfloat16)
    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        assert torch.equal(loaded.last_logits(half), model(**half, use_cache=False).logits[:, -1])
