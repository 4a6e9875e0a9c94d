"""VSR loader: the real released files (when ../shared is beside the repo) and small fixture folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmheads.data import DataError, MissingImagesError, load
from vlmheads.data.vsr import caption_pair

VSR = Path(__file__).resolve().parents[3] / "shared" / "data" / "vsr"
needs_vsr = pytest.mark.skipif(not (VSR / "splits").is_dir(), reason="../shared/data/vsr absent")


@needs_vsr
@pytest.mark.parametrize("split,sizes", [("random", (7680, 1097, 2195)), ("zeroshot", (3489, 340, 1222))])
def test_released_split_sizes(split, sizes):
    got = tuple(len(load(f"vsr:{split}/{part}", root=VSR, images=False)) for part in ("train", "dev", "test"))
    assert got == sizes


@needs_vsr
def test_adaptvis_test_part_and_statement_prompts():
    test = load("vsr:zeroshot/test", root=VSR, images=False, split="test")
    assert len(test) == 978
    first = load("vsr:zeroshot/test", root=VSR, images=False, limit=1)[0]
    assert first.prompt == ("Determine whether the description about the spatial relationship is correct or not. "
                            "Answer with yes or no: The car is behind the suitcase.")
    assert (first.answer, first.options, first.relation, first.subject, first.object) == \
        ("yes", ("yes", "no"), "behind", "car", "suitcase")


@needs_vsr
def test_relation_prompts_match_adaptvis_file_record_for_record():
    data = load("vsr:zeroshot/test", root=VSR, images=False, style="relation")
    rows = [json.loads(line) for line in (VSR / "adaptvis_prompts" / "VSR_with_answer.jsonl").open()]
    assert len(data) == len(rows) == 629
    assert data.skipped == {"false caption (no relation to ask about)": 593}
    for ex, row in zip(data, rows):
        assert ex.meta["record"] == row["id"]
        assert ex.prompt == row["question"].split("USER: ")[1].split("\nASSISTANT:")[0]
        assert ex.answer == row["answer"] and ex.answer in ex.options


def _fixture(root: Path, records: list[dict], nested: bool = False) -> Path:
    (root / "splits" / "random").mkdir(parents=True)
    (root / "splits" / "random" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for r in records:
        folder = root / "images" / ("train2017" if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(folder / r["image"])
    return root


RECORDS = [
    {"image": "000000000001.jpg", "image_link": "http://images.cocodataset.org/train2017/000000000001.jpg",
     "caption": "The cat is on the bed.", "label": 1, "relation": "on"},
    {"image": "000000000002.jpg", "image_link": "http://images.cocodataset.org/train2017/000000000002.jpg",
     "caption": "The dog is under the table.", "label": 0, "relation": "under"},
]


@pytest.mark.parametrize("nested", [False, True])
def test_fixture_layouts_flat_and_by_coco_folder(tmp_path, nested):
    root = _fixture(tmp_path, RECORDS, nested=nested)
    data = load("vsr:random/test", root=root)
    assert [e.answer for e in data] == ["yes", "no"]
    assert all(Path(e.image).is_file() for e in data)
    rel = load("vsr:random/test", root=root, style="relation")
    assert len(rel) == 1 and rel.skipped == {"false caption (no relation to ask about)": 1}
    assert rel[0].prompt == "Where is the cat in relation to bed? Answer with one word or phrase."
    assert rel[0].options == ("on", "under")


def test_missing_images_and_malformed_lines(tmp_path):
    root = _fixture(tmp_path, RECORDS)
    (root / "images" / "000000000002.jpg").unlink()
    with pytest.raises(MissingImagesError, match=r"1 of 2 images are missing:\n.*000000000002.jpg"):
        load("vsr:random/test", root=root)
    path = root / "splits" / "random" / "test.jsonl"
    path.write_text(path.read_text() + '{"image": "x.jpg", "label": 1}\n')
    with pytest.raises(DataError, match=r"test.jsonl:3: record has no 'caption' field"):
        load("vsr:random/test", root=root, images=False)
    path.write_text('{"image": \n')
    with pytest.raises(DataError, match=r"test.jsonl:1: not valid JSON"):
        load("vsr:random/test", root=root, images=False)
    for record, message in (({"image": 3, "caption": "a cat left of a dog", "relation": "left of", "label": 1},
                             "field 'image' must be a string, got 3"),
                            ({"image": "x.jpg", "caption": "c", "relation": "left of", "label": True},
                             "field 'label' must be a whole number, got true"),
                            ({"image": "x.jpg", "caption": "c", "relation": "left of", "label": 1, "subj": None,
                              "obj": "dog"}, "field 'subj' must be a string, got null")):
        path.write_text(json.dumps(record) + "\n")
        with pytest.raises(DataError, match=r"test.jsonl:1: " + message):
            load("vsr:random/test", root=root, images=False)
    path.write_bytes(b'{"image": "x.jpg", "caption": "caf\xe9", "relation": "near", "label": 1}\n')
    with pytest.raises(DataError, match=r"test.jsonl:1: not UTF-8 text"):
        load("vsr:random/test", root=root, images=False)


def test_bad_names_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="random.*zeroshot"):
        load("vsr:fewshot/test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"splits/zeroshot/dev.jsonl"):
        load("vsr:zeroshot/dev", root=tmp_path)


def test_caption_pairs_by_hand():
    assert caption_pair("The car is behind the suitcase.", "behind") == ("car", "suitcase")
    assert caption_pair("The train contains the bicycle.", "contains") == ("train", "bicycle")
    assert caption_pair("The cake has as a part the dog.", "has as a part") == ("cake", "dog")
    assert caption_pair("Nothing to see.", "on") is None
