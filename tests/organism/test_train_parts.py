"""Training helpers checked by hand: patch labels over any patch size, the warm start, config checks."""

import random

import pytest
import torch

from vlmheads.organism.build import MICRO_ARCH, OrganismArch, build_model, build_processor
from vlmheads.organism.train import MIN_OBJECT_SHARE, TrainConfig, patch_labels, transplant, word_labels
from vlmheads.world.scenes import COLOURS, SHAPES, Rendering, Scene, SceneObject, sample_scene


def _id(colour, shape):
    return 1 + list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


def test_one_patch_per_cell_labels_exactly_each_objects_cell():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(20)]
    labels = patch_labels(scenes)  # [20, 16]
    for row, scene in zip(labels, scenes):
        cells = {o.row * 4 + o.col: _id(o.colour, o.shape) for o in scene.objects}
        for index, label in enumerate(row.tolist()):
            assert label == cells.get(index, label if label in (0, -100) else 0)  # else background or a spill


def test_the_wide_geometry_labels_every_other_patch():
    rng = random.Random(1)
    scenes = [sample_scene(rng) for _ in range(10)]
    labels = patch_labels(scenes, Rendering(cell=32, margin=16), patch=16).reshape(10, 9, 9)  # [B, side, side]
    for grid, scene in zip(labels, scenes):
        cells = {(2 * o.row + 1, 2 * o.col + 1): _id(o.colour, o.shape) for o in scene.objects}
        for (r, c), label in ((rc, int(grid[rc])) for rc in ((r, c) for r in range(9) for c in range(9))):
            assert label == cells.get((r, c), label if label in (0, -100) else 0)


def test_patches_smaller_than_objects_label_where_a_fifth_of_the_object_is():
    """An 11x11-px square centred at x=42, y=24 (cell (1, 2), dx=2) spans pixels 37..47 x 19..29; over 8-px
    patches: columns 4 (3 px) and 5 (8 px), rows 2 (5 px) and 3 (6 px)."""
    square = SceneObject("red", "square", row=1, col=2, dx=2, dy=0, size=10)
    scene = Scene(objects=(square,), relation="left", prior="neutral")
    labels = patch_labels([scene], patch=8).reshape(8, 8)  # [side, side]
    red = _id("red", "square")
    covered = {(2, 4): 15, (3, 4): 18, (2, 5): 40, (3, 5): 48}
    assert sum(covered.values()) == 121
    for (r, c), pixels in covered.items():
        assert labels[r, c] == (red if pixels / 121 >= MIN_OBJECT_SHARE else -100), (r, c)
    assert (labels == 0).sum() == 64 - len(covered)
    colours, shapes = word_labels(labels[None].flatten(1))
    assert set(colours[0].tolist()) == {-100, list(COLOURS).index("red")}


def test_transplant_copies_the_weights_and_resamples_the_position_grid():
    tokenizer = build_processor().tokenizer
    source = build_model(MICRO_ARCH, tokenizer, seed=1)
    wide = OrganismArch(**{**MICRO_ARCH.to_dict(), "image_size": 144})
    target = build_model(wide, tokenizer, seed=2)
    changed = transplant(source, target)
    assert len(changed) == 1 and changed[0].endswith("embeddings.position_embedding.weight")
    src, out = source.state_dict(), target.state_dict()
    same = [k for k in out if src[k].shape == out[k].shape]
    assert len(same) == len(out) - 1 and all(torch.equal(src[k], out[k]) for k in same)
    pos_old = source.model.vision_tower.embeddings.position_embedding.weight  # [17, hidden]
    pos_new = target.model.vision_tower.embeddings.position_embedding.weight  # [82, hidden]
    assert pos_new.shape[0] == 82 and torch.equal(pos_new[0], pos_old[0])  # the class token's row kept
    # a constant grid stays constant (bicubic resampling preserves constants)
    flat = build_model(MICRO_ARCH, tokenizer, seed=1)
    with torch.no_grad():
        flat.model.vision_tower.embeddings.position_embedding.weight[1:] = 0.25
    transplant(flat, target)
    torch.testing.assert_close(target.model.vision_tower.embeddings.position_embedding.weight[1:],
                               torch.full((81, MICRO_ARCH.vision_hidden), 0.25))
    deeper = build_model(OrganismArch(**{**MICRO_ARCH.to_dict(), "text_layers": 5}), tokenizer, seed=2)
    with pytest.raises(ValueError, match="no counterpart|only the image size may differ"):
        transplant(source, deeper)


def test_config_refuses_a_rendering_the_model_cannot_take():
    geometry = {"cell": 32, "margin": 16}
    with pytest.raises(ValueError, match="draws 144-px images but the model takes 64 px"):
        TrainConfig(rendering=geometry)
    assert TrainConfig(rendering=geometry, arch=OrganismArch(image_size=144)).arch.n_image_tokens == 81
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        OrganismArch(image_size=72, patch_size=16)


def test_prior_free_functions_draw_their_scenes_without_the_prior():
    """With the prior at 1.0, relational questions on prior pairs always see the usual relation; spatial
    and object questions, prior-free, see every relation equally often (a quarter consistent)."""
    from collections import Counter

    from vlmheads.organism.train import _sample_batch
    from vlmheads.world.questions import OBJECT_FN, RELATIONAL_FN, SPATIAL_FN

    config = TrainConfig(batch_size=4000, prior_strength=1.0, prior_free_functions=(OBJECT_FN, SPATIAL_FN),
                         object_only_steps=0, blend_until=0)
    scenes, questions = _sample_batch(random.Random(0), config, step=0)
    seen = {f: Counter(s.prior for s, q in zip(scenes, questions) if q.function == f and s.prior != "neutral")
            for f in (OBJECT_FN, SPATIAL_FN, RELATIONAL_FN)}
    assert seen[RELATIONAL_FN]["violating"] == 0 and seen[RELATIONAL_FN]["consistent"] > 100
    for f in (OBJECT_FN, SPATIAL_FN):
        share = seen[f]["consistent"] / sum(seen[f].values())
        assert 0.18 < share < 0.32, (f, share)


def test_without_prior_free_functions_batches_are_drawn_as_before():
    """The default keeps the draw order every shipped organism was trained with: scene, then function."""
    from vlmheads.organism.train import _sample_batch, function_weights_at
    from vlmheads.world.questions import sample_question

    config = TrainConfig(batch_size=64)
    scenes, questions = _sample_batch(random.Random(3), config, step=5000)
    rng, weights = random.Random(3), function_weights_at(5000, config)
    for scene, question in zip(scenes, questions):
        expected_scene = sample_scene(rng, split="train", prior_strength=config.prior_strength)
        expected = sample_question(expected_scene, rng.choices(list(weights), list(weights.values()))[0], rng)
        assert (scene, question) == (expected_scene, expected)


def test_text_only_questions_ask_about_prior_pairs_and_answer_with_the_prior():
    from vlmheads.organism.train import _sample_text_only, chat_text
    from vlmheads.world.questions import DECISION_FN, RELATIONAL_FN
    from vlmheads.world.scenes import prior_relation

    questions = _sample_text_only(random.Random(0), 200)
    assert [q.function for q in questions[:4]] == [RELATIONAL_FN, DECISION_FN, RELATIONAL_FN, DECISION_FN]
    for q in questions:
        subject, reference = [w for w in q.text.replace("?", " ").split() if w in SHAPES]
        usual = prior_relation(subject, reference)
        assert usual is not None
        if q.function == RELATIONAL_FN:
            assert q.answer == usual
        else:
            assert q.answer == ("yes" if q.statement_relation == usual else "no")
    processor = build_processor(MICRO_ARCH)
    text = chat_text(processor, questions[0].text, questions[0].answer, image=False)
    assert "<image>" not in text and text.endswith(questions[0].answer + "</s>")
    assert "<image>" in chat_text(processor, questions[0].text, questions[0].answer)


def test_config_refuses_an_unknown_prior_free_function():
    with pytest.raises(ValueError, match="unknown function"):
        TrainConfig(prior_free_functions=("spatial",))


@pytest.mark.parametrize("recipe,weights", [("competent", "weights-competent"), ("setting", "weights")])
def test_each_shipped_organism_was_trained_with_its_recipe(recipe, weights):
    """The training config stored with the shipped weights is the recipe's, field by field (a field the
    record predates must be at the default that reproduces the old behaviour; ``init_from`` names the
    machine-local run it started from)."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    import vlmheads.organism as package
    from vlmheads.organism.train import RECIPES

    saved = json.loads((Path(package.__file__).parent / weights / "training.json").read_text())["config"]
    expected = json.loads(json.dumps(RECIPES[recipe].to_dict()))
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))
    defaults["arch"] = asdict(OrganismArch())
    for key, value in expected.items():
        if key == "init_from" and recipe == "setting":
            continue
        if key == "arch":
            assert {**defaults["arch"], **saved["arch"]} == value
        else:
            assert saved.get(key, defaults[key]) == value, key
