"""WhatsUp loader on folders in the official release layout, checked against AdaptVis's prompt files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import whatsup_release as release  # noqa: E402

from vlmheads.data import DataError, MissingImagesError, load  # noqa: E402
from vlmheads.data.whatsup import SUBSETS, options_in, parse_caption  # noqa: E402

needs_prompts = pytest.mark.skipif(not release.PROMPTS.is_dir(), reason="../shared/data/whatsup absent")
TEST_SIZES = {"controlled_a": 330, "controlled_b": 327, "coco_qa_one_obj": 1798, "coco_qa_two_obj": 352,
              "vg_qa_one_obj": 928, "vg_qa_two_obj": 233}


def _question(row: dict) -> str:
    return row["question"].split("USER:")[1].split("ASSISTANT:")[0].strip()


@needs_prompts
@pytest.mark.parametrize("subset", list(SUBSETS))
def test_release_sizes_protocol_split_and_verbatim_prompts(tmp_path, subset):
    release.build_release(tmp_path, subset, images=False)
    rows = release.prompt_rows(subset)
    assert len(rows) == SUBSETS[subset].size
    data = load(f"whatsup:{subset}", root=tmp_path, images=False, prompts=release.PROMPTS)
    # every record becomes an example except VG_two's record whose prompt leaks the answer in place of options
    assert data.n_records == SUBSETS[subset].size
    assert len(data) + sum(data.skipped.values()) == data.n_records
    for ex in data:
        row = rows[ex.meta["record"]]
        assert ex.prompt == _question(row)
        assert ex.meta["gold"] == row["answer"][0]
        assert ex.answer == row["answer"][0].lower() and ex.answer in ex.options
    test = load(f"whatsup:{subset}", root=tmp_path, images=False, split="test")
    val = load(f"whatsup:{subset}", root=tmp_path, images=False, split="val")
    assert len(test) == TEST_SIZES[subset]
    assert len(val) + len(test) == SUBSETS[subset].size
    assert not {e.meta["record"] for e in val} & {e.meta["record"] for e in test}


@needs_prompts
@pytest.mark.parametrize("subset", ["controlled_a", "controlled_b"])
def test_templated_prompts_match_adaptvis_on_controlled(tmp_path, subset):
    """Without the prompt files the loader writes AdaptVis's question itself: same text for (almost) all."""
    release.build_release(tmp_path, subset, images=False)
    rows = release.prompt_rows(subset)
    data = load(f"whatsup:{subset}", root=tmp_path, images=False)
    same = sum(ex.prompt == _question(rows[ex.meta["record"]]) for ex in data)
    assert same >= len(rows) - 1  # Controlled_A: one "toy cactus"-style plural the heuristic misses at most
    assert [ex.meta["gold"] for ex in data] == [r["answer"][0] for r in rows]


@needs_prompts
def test_images_are_found_in_the_release_folders(tmp_path):
    release.build_release(tmp_path, "coco_qa_two_obj", n=None, images=True)
    data = load("whatsup:coco_qa_two_obj", root=tmp_path, prompts=release.PROMPTS, limit=5)
    assert len(data) == 5
    assert all(Path(ex.image).parent.name == "val2017" and Path(ex.image).is_file() for ex in data)
    assert Path(data[0].image).name == "000000000000.jpg"


@needs_prompts
def test_missing_images_give_one_error_with_paths_and_layout(tmp_path):
    release.build_release(tmp_path, "controlled_a", images=True)
    for p in sorted((tmp_path / "controlled_images").iterdir())[:7]:
        p.unlink()
    with pytest.raises(MissingImagesError) as err:
        load("whatsup:controlled_a", root=tmp_path)
    text = str(err.value)
    assert "7 of 412 images are missing" in text and "... and 2 more" in text
    assert "controlled_images_dataset.json" in text  # the expected layout


def test_missing_annotation_and_malformed_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="controlled_images_dataset.json"):
        load("whatsup:controlled_a", root=tmp_path)
    (tmp_path / "coco_qa_two_obj.json").write_text(json.dumps([[1, "A photo of a cup above a plate", "x"], [2, "y"]]))
    with pytest.raises(DataError, match=r"coco_qa_two_obj.json: record 1 is malformed"):
        load("whatsup:coco_qa_two_obj", root=tmp_path, images=False)
    (tmp_path / "coco_qa_one_obj.json").write_text("[1, 2,\n")
    with pytest.raises(DataError, match=r"coco_qa_one_obj.json:2: not valid JSON"):
        load("whatsup:coco_qa_one_obj", root=tmp_path, images=False)
    (tmp_path / "coco_qa_two_obj.json").write_text(json.dumps([[1, None, "x"]]))
    with pytest.raises(DataError, match=r"coco_qa_two_obj.json: record 0 is malformed: expected \[image_id, correct"):
        load("whatsup:coco_qa_two_obj", root=tmp_path, images=False)
    (tmp_path / "controlled_images_dataset.json").write_text(json.dumps([{"image_path": 17, "caption_options": []}]))
    with pytest.raises(DataError, match=r"controlled_images_dataset.json: record 0 is malformed"):
        load("whatsup:controlled_a", root=tmp_path, images=False)
    (tmp_path / "coco_qa_two_obj.json").write_bytes(b'[[1, "A mug\n above a pl\xe2te", "x"]]')
    with pytest.raises(DataError, match=r"coco_qa_two_obj.json:2: not UTF-8 text"):
        load("whatsup:coco_qa_two_obj", root=tmp_path, images=False)


def test_unparsed_captions_are_counted_not_hidden(tmp_path):
    records = [[1, "A photo of a cup to the left of a plate", "w"], [2, "A cup somewhere", "w"]]
    (tmp_path / "coco_qa_two_obj.json").write_text(json.dumps(records))
    data = load("whatsup:coco_qa_two_obj", root=tmp_path, images=False)
    assert len(data) == 1 and sum(data.skipped.values()) == 1
    assert "skipped 1 of 2 records" in data.skipped_note()
    assert (data[0].subject, data[0].object, data[0].answer) == ("cup", "plate", "left")


def test_prompt_file_must_agree_with_the_records(tmp_path):
    (tmp_path / "controlled_images_dataset.json").write_text(json.dumps(
        [{"image_path": "data/controlled_images/mug_on_table.jpeg", "caption_options": ["a", "b"]}]))
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / SUBSETS["controlled_a"].prompt_file).write_text(json.dumps(
        {"id": 0, "question": "<image>\nUSER: Where is the mug in relation to the table? Answer with left, "
                              "right, on or under.\nASSISTANT:", "answer": ["Under"]}) + "\n")
    with pytest.raises(DataError, match=r"adaptvis|:1: answer 'Under' disagrees"):
        load("whatsup:controlled_a", root=tmp_path, images=False, prompts=prompts)


def test_caption_and_option_parsing_by_hand():
    assert parse_caption("A photo of a dining table on the bottom", "one_obj") == ("dining table", "", "Bottom")
    assert parse_caption("A photo of a cat to the right of a dog", "two_obj") == ("cat", "dog", "Right")
    assert parse_caption("A photo of an apple in front of the bowl", "two_obj") == ("apple", "bowl", "Front")
    assert options_in("Where? Answer with left, right, above, or below.", ()) == ("left", "right", "above", "below")
    assert options_in("Where? \nAnswer with left, right, top or bottom..", ()) == ("left", "right", "top", "bottom")
    assert options_in("no options here", ("a", "b")) == ("a", "b")


def test_unknown_subset_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="controlled_a, controlled_b"):
        load("whatsup:controlled_c", root=tmp_path)
