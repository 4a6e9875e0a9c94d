"""models.identity: what a model on disk is, and what its weights fail to cover."""

from __future__ import annotations

import json
import shutil

from vlmheads.models import organism_path
from vlmheads.models.identity import config_digest, coverage_problem, same_model, source_identity, weights_digest

MODEL_KEYS = [f"m.layers.{i}.{w}.weight" for i in range(4) for w in ("q", "k", "o")] + ["m.embed.weight"]


def test_whole_weights_have_no_problem():
    assert coverage_problem({"missing_keys": set(), "unexpected_keys": set()}, ["model.safetensors"], MODEL_KEYS) \
        is None


def test_one_missing_weight_is_named():
    problem = coverage_problem({"missing_keys": {"m.layers.1.o.weight"}}, ["model.safetensors"], MODEL_KEYS)
    assert problem == ("1 weight(s) the model needs are not in model.safetensors (m.layers.1.o.weight): they would "
                       "be randomly initialised")


def test_a_config_with_fewer_layers_than_the_weights():
    left_over = {f"m.layers.{i}.{w}.weight" for i in (4, 5) for w in ("q", "k", "o")}
    problem = coverage_problem({"unexpected_keys": left_over}, ["a.safetensors", "b.safetensors"], MODEL_KEYS)
    assert problem == "config.json declares 4 layers in m.layers, but the weights hold 6"


def test_a_config_with_more_layers_than_the_weights():
    missing = {f"m.layers.{i}.{w}.weight" for i in (2, 3) for w in ("q", "k", "o")}
    assert coverage_problem({"missing_keys": missing}, ["w.bin"], MODEL_KEYS) == \
        "config.json declares 4 layers in m.layers, but the weights hold 2"


def test_missing_weights_inside_a_layer_are_not_a_layer_count():
    missing = {"m.layers.3.q.weight", "m.layers.3.k.weight"}  # layer 3's o is there: damage, not a shorter config
    assert coverage_problem({"missing_keys": missing}, ["w.bin"], MODEL_KEYS).startswith("2 weight(s) the model needs")


def test_left_over_and_reshaped_weights():
    problem = coverage_problem({"unexpected_keys": {"stray"}, "mismatched_keys": [("m.embed.weight", (2,), (3,))]},
                               ["w.bin"], MODEL_KEYS)
    assert problem == ("1 weight(s) in w.bin fit nowhere in the model (stray); 1 weight(s) have another shape than "
                       "the model's (m.embed.weight)")


def test_config_digest_ignores_layout_and_the_saving_version(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"x": 1, "y": [2], "transformers_version": "4.0"}))
    b.write_text(json.dumps({"y": [2], "x": 1}, indent=4))
    assert config_digest(a) == config_digest(b)
    b.write_text(json.dumps({"y": [2], "x": 2}))
    assert config_digest(a) != config_digest(b)


def test_weights_digest_sees_a_changed_sample_and_a_changed_size(tmp_path):
    path = tmp_path / "w.safetensors"
    data = bytearray(range(256)) * 4096  # 1 MiB
    path.write_bytes(bytes(data))
    before = weights_digest([path])
    data[(1 << 16)] ^= 1  # the first sampled byte after the header
    path.write_bytes(bytes(data))
    assert weights_digest([path]) != before
    path.write_bytes(bytes(data[:-1]))
    assert weights_digest([path]) not in (before, None)
    assert weights_digest([]) is None


def test_the_two_organisms_share_a_config_shape_but_not_their_identity(tmp_path):
    own, competent = source_identity(organism_path()), source_identity(organism_path("organism-competent"))
    assert same_model(own, competent) is False and same_model(own, own) is True
    copy = tmp_path / "copy"
    shutil.copytree(organism_path(), copy)
    assert same_model(source_identity(copy), own) is True  # the same files elsewhere are the same model
    assert same_model(None, own) is None
