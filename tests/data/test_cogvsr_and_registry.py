"""CogVSR decomposition files (writer, loader, validation) and the dataset registry."""

from __future__ import annotations

import json

import pytest

from vlmheads.data import FUNCTIONS, KNOWN, DataError, MissingImagesError, load
from vlmheads.data.cogvsr import write_organism_cogvsr
from vlmheads.data.protocols import adaptvis_split
from vlmheads.world.questions import ORGANISM_FUNCTIONS


def test_organism_decompositions_round_trip(tmp_path):
    path = write_organism_cogvsr(tmp_path, n=8, seed=3)
    data = load(f"cogvsr:{path}")
    assert data.n_records == 8 and len(data) == 8 * 6  # six ordered sub-questions per scene
    first = data[:6]
    assert [e.meta["step"] for e in first] == list(range(6))
    assert {e.function for e in data} == set(ORGANISM_FUNCTIONS) and all(e.function in FUNCTIONS for e in data)
    assert all(e.answer in e.options and e.image.is_file() for e in data)
    assert first[0].meta["main_question"].startswith("Where is the")
    spatial = load(f"cogvsr:{path}", function="spatial")
    assert len(spatial) == 16 and {e.function for e in spatial} == {"spatial_perception"}
    assert sum(spatial.skipped.values()) == 48 - 16
    with_main = load(f"cogvsr:{path}", include_main=True, limit=2)
    assert [e.id.split("/")[1] for e in with_main][:2] == ["main", "sub0"]


def _write(tmp_path, record) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return f"cogvsr:{path}"


GOOD = {"id": "q1", "image": "img.png", "question": "Where is A relative to B?", "answer": "left",
        "options": ["left", "right"], "sub_questions": [
            {"text": "Where is A?", "answer": "top", "options": ["top", "bottom"], "function": "spatial"}]}


@pytest.mark.parametrize("change,message", [
    ({"sub_questions": []}, "non-empty list"),
    ({"answer": "up"}, "answer 'up' is not among the options"),
    ({"options": ["left"]}, "at least two strings"),
    ({"sub_questions": [{"text": "t", "answer": "a", "options": ["a", "b"], "function": "vibes"}]},
     "unknown function 'vibes'"),
    ({"sub_questions": [{"text": "t", "answer": "a", "options": ["a", "b"]}]}, "no 'function' field"),
    # wrong-typed fields: the field, what it must be and what it was
    ({"meta": "violating"}, "field 'meta' must be an object, got \"violating\""),
    ({"image": 17}, "field 'image' must be a string, got 17"),
    ({"image": None}, "field 'image' must be a string, got null"),
    ({"question": 3}, "field 'question' must be a string, got 3"),
    ({"id": None}, "field 'id' must be a string or a whole number, got null"),
    ({"relation": 5}, "field 'relation' must be a string, got 5"),
    ({"sub_questions": [{"text": None, "answer": "a", "options": ["a", "b"], "function": "spatial"}]},
     r"\(sub_questions\[0\]\): field 'text' must be a string, got null"),
    ({"sub_questions": "one"}, "field 'sub_questions' must be a list"),
])
def test_validation_names_file_line_and_problem(tmp_path, change, message):
    with pytest.raises(DataError, match=r"d.jsonl:1.*" + message):
        load(_write(tmp_path, {**GOOD, **change}), images=False)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).encode().replace(b"Where", b"O\xf9"))
    with pytest.raises(DataError, match=r"d.jsonl:2: not UTF-8 text \(byte 0xf9 at offset \d+\); save the file as"):
        load(f"cogvsr:{path}", images=False)


def test_missing_image_and_missing_file(tmp_path):
    with pytest.raises(MissingImagesError, match="img.png"):
        load(_write(tmp_path, GOOD))
    with pytest.raises(FileNotFoundError, match="no decomposition file"):
        load(f"cogvsr:{tmp_path / 'nope.jsonl'}")


def test_organism_stand_ins():
    vsr = load("organism:vsr")
    labels = [e.meta["label"] for e in vsr]
    assert sum(labels) * 2 == len(labels) == 400  # balanced
    assert vsr.scorer == "exact" and {e.function for e in vsr} == {"decision_making"}
    controlled = load("organism:controlled", split="test")
    assert len(controlled) == 320 and {e.function for e in controlled} == {"relational_reasoning"}
    relations = [e.relation for e in load("organism:controlled")]
    assert all(relations.count(r) == 100 for r in set(relations))
    decomposed = load("organism:decomposed", function="spatial", limit=10)
    assert len(decomposed) == 10 and {e.function for e in decomposed} == {"spatial_perception"}
    val = load("organism:vsr", split="val")
    assert val.examples == tuple(vsr[i] for i in adaptvis_split(400, "val"))


def test_registry_errors():
    with pytest.raises(ValueError, match="whatsup:controlled_a"):
        load("imagenet:val")
    with pytest.raises(ValueError, match="family:name"):
        load("whatsup")
    with pytest.raises(ValueError, match="organism:controlled"):
        load("organism:nothing")
    with pytest.raises(ValueError, match="limit must be positive"):
        load("organism:vsr", limit=0)
    assert "vsr:zeroshot/test" in KNOWN


def test_real_roots_come_from_argument_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("VLMHEADS_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="VLMHEADS_DATA"):
        load("vsr:zeroshot/test")
    monkeypatch.setenv("VLMHEADS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "vsr")):
        load("vsr:zeroshot/test")


def test_images_on_disk_feed_the_model(organism, tmp_path):
    from vlmheads.evaluation.options import score_options

    path = write_organism_cogvsr(tmp_path, n=4, seed=1, rendering=organism.rendering)
    data = load(f"cogvsr:{path}", function="relational")
    scores = score_options(organism, list(data))
    assert len(scores) == 4  # paths are opened when the batch is encoded


def test_written_images_keep_their_rendering_and_a_model_of_another_warns(organism, prior_organism, tmp_path):
    from vlmheads.data import as_pil
    from vlmheads.evaluation.options import score_options
    from vlmheads.world.scenes import RenderingMismatch, rendering_of

    path = write_organism_cogvsr(tmp_path, n=4, seed=1)  # drawn for the default organism
    data = list(load(f"cogvsr:{path}", function="relational"))
    assert rendering_of(as_pil(data[0].image)) == prior_organism.rendering.key
    score_options(prior_organism, data)  # its own scenes: silent (warnings are errors in this suite)
    organism.__dict__.pop("_rendering_warned", None)  # the fixture is shared: forget earlier warnings
    with pytest.warns(RenderingMismatch, match="organism-competent sees organism scenes drawn as"):
        score_options(organism, data)
