"""VSR (Liu et al. 2023) from its released JSONL splits and a folder of COCO images.

Layout (``root`` is the released repository's ``data/`` folder)::

    root/splits/random/{train,dev,test}.jsonl      root/splits/zeroshot/{train,dev,test}.jsonl
    root/images/<COCO file name>   or   root/images/{train2017,val2017}/<COCO file name>

Each record is one caption about one image with a true/false ``label``. Two prompt styles:

* ``"statement"`` (default): AdaptVis's true/false prompt, options yes / no, answer "yes" iff label 1
  ("Determine whether the description about the spatial relationship is correct or not. Answer with
  yes or no: The car is behind the suitcase.").
* ``"relation"``: AdaptVis's open form "Where is the car in relation to suitcase? Answer with one
  word or phrase.", answer = the caption's relation, options = every relation of the loaded file.
  Only true captions have a relation to ask about: false ones are skipped (and counted).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .dataset import Dataset, need, optional, read_jsonl
from .example import Example
from .functions import canonical_function
from .images import check_images
from .protocols import adaptvis_split
from ..errors import InputError, MissingInput

VSR_SPLITS = ("random", "zeroshot")
VSR_PARTS = ("train", "dev", "test")
PROMPT_STYLES = ("statement", "relation")
STATEMENT_PROMPT = ("Determine whether the description about the spatial relationship is correct or not. "
                    "Answer with yes or no: {caption}")
RELATION_PROMPT = "Where is the {subj} in relation to {obj}? Answer with one word or phrase."
LAYOUT = ("  <root>/splits/{random,zeroshot}/{train,dev,test}.jsonl\n"
          "  <root>/images/<COCO file name>  (or <root>/images/train2017/..., <root>/images/val2017/...)")


def parse_vsr_name(name: str) -> tuple[str, str]:
    """"zeroshot/test" -> ("zeroshot", "test"); the part defaults to "test"."""
    split, _, part = name.strip().lower().partition("/")
    split = {"zero-shot": "zeroshot", "zero_shot": "zeroshot"}.get(split, split)
    part = part or "test"
    if split not in VSR_SPLITS or part not in VSR_PARTS:
        raise InputError(f"unknown VSR split {name!r}; use <split>/<part> with split in {VSR_SPLITS} "
                         f"and part in {VSR_PARTS}, e.g. vsr:zeroshot/test")
    return split, part


def caption_pair(caption: str, relation: str) -> tuple[str, str] | None:
    """(subject, object) of "The X is <relation> the Y." or None."""
    match = re.match(rf"^the (.+?) (?:(?:is|are) )?{re.escape(relation)} (?:the |a |an )?(.+?)\.?$", caption.strip(), re.I)
    return (match.group(1), match.group(2)) if match else None


def image_file(root: Path, record: dict) -> Path:
    images = root / "images"
    flat = images / record["image"]
    if flat.is_file():
        return flat
    link = str(record.get("image_link", ""))
    folder = "val2017" if "/val2017/" in link else "train2017"
    nested = images / folder / record["image"]
    return nested if nested.is_file() else flat


def load_vsr(name: str, root: str | Path, split: str | None = None, limit: int | None = None,
             style: str = "statement", images: bool = True) -> Dataset:
    """``name`` like "zeroshot/test". ``split``: None (all), "val"/"test" (AdaptVis's 20/80 split)."""
    vsr_split, part = parse_vsr_name(name)
    if style not in PROMPT_STYLES:
        raise InputError(f"unknown VSR prompt style {style!r}; use one of {PROMPT_STYLES}")
    root = Path(root).expanduser()
    path = root / "splits" / vsr_split / f"{part}.jsonl"
    if not path.is_file():
        raise MissingInput(f"vsr:{vsr_split}/{part}: no file {path}\nexpected layout:\n{LAYOUT}")
    rows = read_jsonl(path)
    parsed = []
    for lineno, rec in rows:
        where = f"{path}:{lineno}"
        caption = need(rec, "caption", where, str)
        relation = need(rec, "relation", where, str)
        label = need(rec, "label", where, int)
        need(rec, "image", where, str)
        for key in ("subj", "obj", "image_link"):
            optional(rec, key, where, str)
        if label not in (0, 1):
            from .dataset import DataError

            raise DataError(f"{where}: label must be 0 or 1, got {label}")
        pair = (rec["subj"], rec["obj"]) if "subj" in rec and "obj" in rec else caption_pair(caption, relation)
        parsed.append((lineno, rec, caption, relation, label, pair))
    relations = tuple(sorted({p[3] for p in parsed}))
    indices = list(range(len(parsed))) if split is None else adaptvis_split(len(parsed), split)
    if limit is not None:
        indices = indices[:limit]
    examples, skipped, paths = [], Counter(), []
    for i in indices:
        lineno, rec, caption, relation, label, pair = parsed[i]
        subj, obj = pair or ("", "")
        if style == "statement":
            prompt, options, answer = STATEMENT_PROMPT.format(caption=caption), ("yes", "no"), \
                ("yes" if label == 1 else "no")
            function = canonical_function("decision")
        else:
            if label != 1:
                skipped["false caption (no relation to ask about)"] += 1
                continue
            if pair is None:
                skipped["subject/object not readable from caption"] += 1
                continue
            prompt, options, answer = RELATION_PROMPT.format(subj=subj, obj=obj), relations, relation
            function = canonical_function("relational")
        file = image_file(root, rec)
        paths.append(file)
        examples.append(Example(
            id=f"vsr-{vsr_split}-{part}-{i:05d}", image=file if images else None, prompt=prompt, options=options,
            answer=answer, function=function, relation=relation, subject=subj, object=obj,
            meta={"record": i, "line": lineno, "label": label, "caption": caption, "image_file": rec["image"],
                  "image_link": rec.get("image_link", ""), "style": style}))
    if images:
        check_images(paths, f"vsr:{vsr_split}/{part}", LAYOUT)
    return Dataset(name=f"vsr:{vsr_split}/{part}", examples=tuple(examples), scorer="vsr" if style == "statement"
                   else "whatsup", split=split, n_records=len(parsed), skipped=dict(skipped), sources=(str(path),))
