"""Build folders in WhatsUp's official release layout from AdaptVis's prompt files (test fixtures).

The release's annotation files are not available offline; each AdaptVis prompt line (one per
release record, in order) names the objects and the gold preposition, from which the record the
release would hold is rebuilt: Controlled records as image names ``<obj1>_<prep>_<obj2>.jpeg``,
COCO/VG records as ``[image_id, correct caption, wrong caption]``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from vlmheads.data.whatsup import SUBSETS

PROMPTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "whatsup" / "adaptvis_prompts"
PREP_FILE = {"On": "on", "Under": "under", "Left": "left_of", "Right": "right_of", "Front": "in-front_of",
             "Behind": "behind"}
PHRASE = {"Left": "to the left of", "Right": "to the right of", "Above": "above", "Below": "below",
          "Front": "in front of", "Behind": "behind"}
OPPOSITE = {"Left": "Right", "Right": "Left", "Above": "Below", "Below": "Above", "Front": "Behind",
            "Behind": "Front", "Top": "Bottom", "Bottom": "Top"}


def prompt_rows(subset: str) -> list[dict]:
    path = PROMPTS / SUBSETS[subset].prompt_file
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def objects_of(question: str) -> tuple[str, str]:
    two = re.search(r"Where (?:is|are) the (.+?) in relation to (?:the )?(.+?)\?", question)
    if two:
        return two.group(1), two.group(2)
    one = re.search(r"Where (?:is|are) the (.+?) in the photo\?", question)
    return one.group(1), ""


def release_record(subset: str, index: int, row: dict):
    spec = SUBSETS[subset]
    gold = row["answer"][0]
    subject, obj = objects_of(row["question"])
    if spec.kind == "controlled":
        name = f"{subject.replace(' ', '-')}_{PREP_FILE[gold]}_{obj.replace(' ', '-')}.jpeg"
        return {"image_path": f"data/{spec.image_dir}/{name}",
                "caption_options": [f"A {subject} {gold.lower()} a {obj}", f"A {subject} near a {obj}"]}
    if spec.kind == "one_obj":
        return [index, f"A photo of a {subject} on the {gold.lower()}",
                f"A photo of a {subject} on the {OPPOSITE[gold].lower()}"]
    return [index, f"A photo of a {subject} {PHRASE[gold]} a {obj}", f"A photo of a {subject} {PHRASE[OPPOSITE[gold]]} a {obj}"]


def image_name(subset: str, record) -> str:
    spec = SUBSETS[subset]
    if spec.kind == "controlled":
        return Path(record["image_path"]).name
    return f"{record[0]:012d}.jpg" if spec.image_dir == "val2017" else f"{record[0]}.jpg"


def build_release(root: Path, subset: str, n: int | None = None, images: bool = True) -> Path:
    """Write ``subset``'s annotation file (first ``n`` records) and, if asked, tiny images."""
    spec = SUBSETS[subset]
    rows = prompt_rows(subset)[:n]
    records = [release_record(subset, i, row) for i, row in enumerate(rows)]
    root.mkdir(parents=True, exist_ok=True)
    (root / spec.annotation).write_text(json.dumps(records))
    if images:
        (root / spec.image_dir).mkdir(exist_ok=True)
        for rec in records:
            Image.new("RGB", (8, 8), (120, 30, 200)).save(root / spec.image_dir / image_name(subset, rec))
    return root
