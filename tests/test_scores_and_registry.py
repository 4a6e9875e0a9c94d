"""HeadScores save/load round trip, the head map drawn from a saved run, and the registries."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data.registry import DATASETS
from vlmheads.intervene import INTERVENE_METHODS
from vlmheads.locate import LOCATE_METHODS, LocateConfig
from vlmheads.plots.headmap import headmap_html
from vlmheads.registry import Registry, UnknownName
from vlmheads.scores import HeadScores


def _scores():
    torch.manual_seed(0)
    score = torch.randn(3, 4)
    score[1, 2] = 5.0
    return HeadScores(model="m", function="spatial_perception", select_by="ablation",
                      geometry={"n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8},
                      scores={("ablation", "spatial_perception"): {"score": score, "ci_low": score - 1,
                                                                   "ci_high": score + 1},
                              ("probe", "object"): {"score": score.abs(), "ci_low": score.abs(),
                                                    "ci_high": score.abs()}},
                      selected=[(1, 2), (0, 0)], k_rule="--top-k", summary={"x": 1}, check={"k": 2})


def test_save_load_round_trip(tmp_path):
    original = _scores()
    original.save(tmp_path)
    loaded = HeadScores.load(tmp_path)
    assert loaded.selected == [(1, 2), (0, 0)] and loaded.function == "spatial_perception"
    assert loaded.ranking() == original.ranking() and loaded.ranking()[0] == (1, 2)
    assert loaded.top(3) == original.ranking()[:3] and loaded.top() == [(1, 2), (0, 0)]
    assert torch.allclose(loaded.score(), original.score(), atol=1e-6)
    assert loaded.methods == ["ablation", "probe"] and loaded.summary == {"x": 1}
    with pytest.raises(ValueError, match="more heads than the model has"):
        loaded.top(13)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files
    assert loaded.format == 3 and loaded.model_files is None


def test_every_score_has_its_kind_and_a_descriptive_one_no_made_up_interval(tmp_path):
    import csv

    from vlmheads.locate import LOCATE_METHODS, score_kind
    from vlmheads.scores import KINDS

    assert {score_kind(name) for method in LOCATE_METHODS.values() for name in method.scores} == set(KINDS)
    assert (score_kind("ablation"), score_kind("attribution"), score_kind("probe")) == \
        ("causal", "estimate", "descriptive")
    run = _scores()
    nan = torch.full((3, 4), float("nan"))
    run.scores[("probe", "object")].update(ci_low=nan, ci_high=nan, kind="descriptive")
    run.save(tmp_path)
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    probe = [r for r in rows if r["method"] == "probe"]
    assert {r["kind"] for r in probe} == {"descriptive"} and {r["ci_low"] for r in probe} == {""}
    assert {r["kind"] for r in rows if r["method"] == "ablation"} == {"causal"}
    loaded = HeadScores.load(tmp_path)
    assert loaded.kind("probe", "object") == "descriptive" and torch.isnan(loaded.scores[("probe", "object")]["ci_low"]).all()
    assert loaded.frame().groupby("method")["kind"].first().to_dict() == {"ablation": "causal", "probe": "descriptive"}
    # a run from before the kind column (format 2): read, with the kinds its methods had
    import json

    info = json.loads((tmp_path / "heads.json").read_text())
    info["format"] = 2
    (tmp_path / "heads.json").write_text(json.dumps(info))
    with open(tmp_path / "scores.csv") as f:
        old = [{k: v for k, v in r.items() if k != "kind"} for r in csv.DictReader(f)]
    with open(tmp_path / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(old[0]))
        writer.writeheader()
        writer.writerows(old)
    legacy = HeadScores.load(tmp_path)
    assert legacy.format == 2 and legacy.kind("probe", "object") == "descriptive" and legacy.kind("ablation") == "causal"

    info["format"] = 3
    (tmp_path / "heads.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="header must have layer, head, method, function, kind"):
        HeadScores.load(tmp_path)



def test_whose_heads_they_are_is_read_before_a_model_loads(tmp_path):
    files = {"config_sha256": "a" * 16, "weights_digest": "b" * 16}
    run = _scores()
    run.model_files = files
    assert run.foreign_to("m", files=files, function="spatial_perception", geometry=(3, 4)) == {}
    other = {**files, "weights_digest": "c" * 16}
    reasons = run.foreign_to("n", files=other, function="relational_reasoning", geometry=(3, 8))
    assert list(reasons) == ["function", "model", "geometry"]
    assert "was made on m (config aaaaaaaaaaaaaaaa, weights bbbbbbbbbbbbbbbb), not on n" in reasons["model"]
    assert run.foreign_to("elsewhere/n", files=files) == {}  # the same files under another name
    run.model_files = None  # a run that recorded none is compared by name
    assert "made on a model named m, not n" in run.foreign_to("n", files=files)["model"]
    assert run.foreign_to("some/dir/m") == {}


def test_headmap_is_drawn_from_the_saved_run(tmp_path):
    _scores().save(tmp_path)
    html = headmap_html(HeadScores.load(tmp_path))
    assert 'id="hm-method"' in html and "ablation|spatial_perception" in html and "m: heads by function" in html


def test_registry_names_what_it_knows():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg["a"] == 1 and reg["b"]() == 2 and reg.names() == ("a", "b")
    with pytest.raises(UnknownName, match="unknown widget 'c'; choose from a, b"):
        reg["c"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 3)


def test_the_suite_registries():
    assert set(DATASETS) == {"whatsup", "vsr", "cogvsr", "organism"}
    assert LOCATE_METHODS.names() == ("ablation", "patching", "attribution", "probe", "attention", "redundancy", "dla",
                                      "prior")
    assert set(INTERVENE_METHODS) == {"none", "scalingvis", "adaptvis", "head_adaptvis", "emphasize", "attenuate",
                                      "head_scalingvis", "ablate", "visionboost", "steer", "suppress"}
    from vlmheads.intervene import METHODS

    assert "suppress" not in METHODS and set(METHODS) == set(INTERVENE_METHODS) - {"suppress"}  # opt-in
    with pytest.raises(ValueError, match="needs the patching method"):
        LocateConfig(methods=("ablation",), select_by="denoising")


def test_random_head_sets_avoid_the_located_heads_and_are_seeded():
    from vlmheads.intervene import random_head_sets
    from vlmheads.models.adapter import HeadGeometry

    g = HeadGeometry(n_layers=2, n_heads=3, n_kv_heads=3, head_dim=4)
    located = ((0, 1), (1, 2))
    draws = random_head_sets(g, located, 20, seed=3)
    assert len(draws) == 20 and all(len(d) == 2 and d == tuple(sorted(d)) for d in draws)
    assert not {h for d in draws for h in d} & set(located)
    assert {h for d in draws for h in d} == {(0, 0), (0, 2), (1, 0), (1, 1)}  # every other head is drawn
    assert draws == random_head_sets(g, located, 20, seed=3) != random_head_sets(g, located, 20, seed=4)
