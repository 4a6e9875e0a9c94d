import random
from collections import Counter

import pytest

from vlmheads.world.scenes import (BACKGROUND, CELL, COLOURS, GRID, PRIOR_STRENGTH, RELATIONS, Scene,
                                      SceneObject, prior_relation, quadrant_relation, relation_between, render,
                                      sample_scene)


@pytest.mark.parametrize("a,b,expected", [
    ((0, 0), (0, 3), "left"),      # same row, a further left
    ((2, 3), (2, 1), "right"),
    ((0, 2), (3, 2), "above"),     # rows grow downwards
    ((3, 0), (1, 1), "below"),     # |d_row| = 2 > |d_col| = 1
    ((0, 0), (1, 1), None),        # diagonal: not definite
    ((1, 2), (1, 2), None),
])
def test_relation_between_hand_cases(a, b, expected):
    assert relation_between(a, b) == expected


@pytest.mark.parametrize("a,b,expected", [
    ((0, 1), (0, 2), "left"),      # neighbours across the vertical midline
    ((1, 0), (0, 3), "left"),      # |d_col| = 3 > |d_row| = 1, both in the top half
    ((0, 0), (0, 1), None),        # same quadrant
    ((1, 1), (2, 3), None),        # quadrants differ along both axes
    ((1, 2), (3, 2), "above"),
    ((3, 0), (0, 1), "below"),
])
def test_quadrant_relation_hand_cases(a, b, expected):
    assert quadrant_relation(a, b) == expected


def test_prior_relation_is_symmetric():
    assert prior_relation("triangle", "square") == "above"
    assert prior_relation("square", "triangle") == "below"
    assert prior_relation("circle", "cross") == "left"
    assert prior_relation("cross", "circle") == "right"
    assert prior_relation("circle", "square") is None


@pytest.mark.parametrize("split", ["train", "controlled"])
def test_sampled_scenes_are_well_formed(split):
    rng = random.Random(1)
    for _ in range(500):
        scene = sample_scene(rng, split=split)
        assert 2 <= len(scene.objects) <= 3
        assert len({o.colour for o in scene.objects}) == len(scene.objects)
        assert len({o.shape for o in scene.objects}) == len(scene.objects)
        assert len({(o.row, o.col) for o in scene.objects}) == len(scene.objects)
        s, o = scene.subject, scene.reference
        assert relation_between((s.row, s.col), (o.row, o.col)) == scene.relation
        # the relation follows from the two quadrants: they differ along the relation's axis only
        (s_v, s_h), (o_v, o_h) = s.quadrant.split("-"), o.quadrant.split("-")
        if scene.relation in ("left", "right"):
            assert s_v == o_v and s_h == scene.relation and o_h != s_h
        else:
            assert s_h == o_h and s_v == {"above": "top", "below": "bottom"}[scene.relation] and o_v != s_v
        usual = prior_relation(s.shape, o.shape)
        assert scene.prior == ("neutral" if usual is None else "consistent" if usual == scene.relation else "violating")


def test_train_split_follows_priors_and_forced_relations_do_not():
    rng = random.Random(2)
    prior_scenes = [s for s in (sample_scene(rng, "train") for _ in range(6000)) if s.prior != "neutral"]
    consistent = sum(s.prior == "consistent" for s in prior_scenes) / len(prior_scenes)
    # 0.88 follow the prior, and a quarter of the rest land on it by chance
    expected = PRIOR_STRENGTH + (1 - PRIOR_STRENGTH) / 4
    assert abs(consistent - expected) < 0.03
    forced = [sample_scene(rng, "controlled", relation=r) for r in RELATIONS for _ in range(300)]
    assert Counter(s.relation for s in forced) == {r: 300 for r in RELATIONS}
    prior_forced = [s for s in forced if s.prior != "neutral"]
    assert abs(sum(s.prior == "consistent" for s in prior_forced) / len(prior_forced) - 0.25) < 0.05


def test_bad_split_and_relation_are_named():
    with pytest.raises(ValueError, match="unknown organism split 'test'"):
        sample_scene(random.Random(0), split="test")
    with pytest.raises(ValueError, match="unknown relation 'on'"):
        sample_scene(random.Random(0), relation="on")


def test_render_puts_each_object_in_its_cell():
    objects = (SceneObject("red", "square", row=0, col=3, dx=0, dy=0, size=10),
               SceneObject("blue", "circle", row=2, col=1, dx=1, dy=-1, size=12))
    image = render(Scene(objects=objects, relation="right", prior="neutral"))
    assert image.size == (GRID * CELL, GRID * CELL)
    assert image.getpixel((3 * CELL + 8, 0 * CELL + 8)) == COLOURS["red"]
    assert image.getpixel((1 * CELL + 9, 2 * CELL + 7)) == COLOURS["blue"]
    assert image.getpixel((0, 0)) == BACKGROUND
    # nothing spills out of the two cells
    for x in range(GRID * CELL):
        for y in range(GRID * CELL):
            cell = (y // CELL, x // CELL)
            if cell not in {(0, 3), (2, 1)}:
                assert image.getpixel((x, y)) == BACKGROUND


def test_quadrants():
    def obj(row, col):
        return SceneObject("red", "square", row, col, 0, 0, 10)
    assert obj(0, 0).quadrant == "top-left"
    assert obj(1, 2).quadrant == "top-right"
    assert obj(2, 1).quadrant == "bottom-left"
    assert obj(3, 3).quadrant == "bottom-right"


def test_weakened_rendering_by_hand_and_seeded_by_the_scene():
    import numpy as np

    from vlmheads.world.scenes import CLEAN, Rendering, render

    scene = sample_scene(random.Random(7))
    clean = np.asarray(render(scene), dtype=np.float64)
    assert np.array_equal(np.asarray(render(scene, CLEAN)), clean)
    faded = np.asarray(render(scene, Rendering(contrast=0.5)), dtype=np.float64)
    expected = np.rint(np.asarray(BACKGROUND) + 0.5 * (clean - np.asarray(BACKGROUND)))
    assert np.array_equal(faded, expected)  # every pixel halfway to the background, no noise
    noisy = [np.asarray(render(scene, Rendering(0.4, 8.0))) for _ in range(2)]
    assert np.array_equal(noisy[0], noisy[1])  # the scene seeds its noise: same scene, same image
    other = np.asarray(render(sample_scene(random.Random(8)), Rendering(0.4, 8.0)), dtype=np.float64)
    background_pixels = clean == np.asarray(BACKGROUND)
    residual = noisy[0].astype(np.float64)[background_pixels] - 128
    assert 6 < residual.std() < 10 and not np.array_equal(noisy[0], other)
    for bad, words in [(dict(contrast=0), "contrast must be in"), (dict(contrast=1.5), "contrast must be in"),
                       (dict(noise=-1), "noise must be >= 0")]:
        with pytest.raises(ValueError, match=words):
            Rendering(**bad)
    with pytest.raises(ValueError, match="unknown rendering settings"):
        Rendering.from_dict({"blur": 2})
    assert Rendering.from_dict(None) is CLEAN and Rendering.from_dict(Rendering(0.4, 8).to_dict()) == Rendering(0.4, 8)


def test_prior_strength_is_a_sampling_parameter():
    rng = random.Random(0)
    scenes = [sample_scene(rng, split="train", prior_strength=1.0) for _ in range(400)]
    assert all(s.prior != "violating" for s in scenes)


def test_a_wider_cell_pitch_draws_the_same_scene_with_background_between_the_objects():
    import numpy as np

    from vlmheads.world.scenes import Rendering, object_masks

    objects = (SceneObject("red", "square", row=0, col=3, dx=0, dy=0, size=10),
               SceneObject("blue", "circle", row=2, col=1, dx=1, dy=-1, size=12))
    scene = Scene(objects=objects, relation="right", prior="neutral")
    wide = Rendering(cell=32, margin=16)
    image = render(scene, wide)
    assert image.size == (144, 144) and wide.image_size == 144
    assert image.getpixel((16 + 3 * 32 + 8, 16 + 0 * 32 + 8)) == COLOURS["red"]  # centre of its 16-px patch
    masks = object_masks(scene, wide)  # [2, 144, 144]
    drawn = np.asarray(image) != np.asarray(BACKGROUND, dtype=np.uint8)  # [144, 144, 3]
    assert (drawn.any(-1) == masks.any(0)).all()  # the masks are exactly the drawn pixels
    assert masks[0].sum() == 11 * 11  # a 10-px square box is 11 pixels a side (PIL's inclusive box)
    for mask, (row, col) in zip(masks, [(0, 3), (2, 1)]):  # each object stays in patch (2 row + 1, 2 col + 1)
        ys, xs = mask.nonzero()
        assert set(ys // 16) == {2 * row + 1} and set(xs // 16) == {2 * col + 1}


def test_rendering_geometry_round_trip_and_refusals():
    from vlmheads.world.scenes import CLEAN, Rendering

    assert Rendering(0.4, 8.0).to_dict() == {"contrast": 0.4, "noise": 8.0}  # the default geometry is left out
    assert Rendering(0.4, 8.0, 32, 16).to_dict() == {"contrast": 0.4, "noise": 8.0, "cell": 32, "margin": 16}
    assert Rendering.from_dict({"contrast": 0.4, "noise": 8.0, "cell": 32, "margin": 16}) == Rendering(0.4, 8.0, 32, 16)
    assert Rendering(cell=32).clean and Rendering(cell=32) != CLEAN
    with pytest.raises(ValueError, match="cell must be an integer >= 16"):
        Rendering(cell=12)
    with pytest.raises(ValueError, match="margin must be an integer >= 0"):
        Rendering(margin=-1)
    with pytest.raises(ValueError, match="known: contrast, noise, cell, margin"):
        Rendering.from_dict({"scale": 2})
