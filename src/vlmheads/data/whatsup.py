"""WhatsUp (Kamath et al. 2023) from its official release, prompted the way AdaptVis prompts it.

Release layout (``root`` is the folder the official code calls ``data/``)::

    root/controlled_images_dataset.json   root/controlled_images/<obj1>_<prep>_<obj2>.jpeg
    root/controlled_clevr_dataset.json    root/controlled_clevr/<obj1>_<prep>_<obj2>.jpeg
    root/coco_qa_one_obj.json             root/val2017/<coco id, 12 digits>.jpg
    root/coco_qa_two_obj.json             (same images)
    root/vg_qa_one_obj.json               root/vg_images/<vg id>.jpg
    root/vg_qa_two_obj.json               (same images)

Controlled records are ``{"image_path": ..., "caption_options": [correct, wrong, ...]}`` (the
preposition is the second ``_`` field of the file name); COCO/VG records are ``[image_id,
correct_caption, wrong_caption]``. Each record becomes one question with AdaptVis's options
("Where is the beer bottle in relation to the armchair? Answer with left, right, on or under.").
When AdaptVis's prompt files are given (``prompts=``; ``<Subset>_with_answer_<n>_options.jsonl``,
one line per record, in record order), their question text is used verbatim and their gold answer
is checked against the record's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .dataset import DataError, Dataset, read_jsonl, read_text
from .example import Example
from .functions import canonical_function
from .images import check_images
from .protocols import adaptvis_split
from ..errors import InputError, MissingInput


@dataclass(frozen=True)
class Subset:
    annotation: str
    image_dir: str
    kind: str  # "controlled" | "one_obj" | "two_obj"
    options: tuple[str, ...]
    prompt_file: str
    size: int  # records in the official release


SUBSETS = {
    "controlled_a": Subset("controlled_images_dataset.json", "controlled_images", "controlled",
                           ("left", "right", "on", "under"),
                           "Controlled_Images_A_with_answer_four_options.jsonl", 412),
    "controlled_b": Subset("controlled_clevr_dataset.json", "controlled_clevr", "controlled",
                           ("left", "right", "front", "behind"),
                           "Controlled_Images_B_with_answer_four_options.jsonl", 408),
    "coco_qa_one_obj": Subset("coco_qa_one_obj.json", "val2017", "one_obj", ("left", "right", "top", "bottom"),
                              "COCO_QA_one_obj_with_answer_four_options.jsonl", 2247),
    "coco_qa_two_obj": Subset("coco_qa_two_obj.json", "val2017", "two_obj", ("left", "right", "above", "below"),
                              "COCO_QA_two_obj_with_answer_four_options.jsonl", 440),
    "vg_qa_one_obj": Subset("vg_qa_one_obj.json", "vg_images", "one_obj",
                            ("left", "right", "front", "behind", "top", "bottom"),
                            "VG_QA_one_obj_with_answer_six_options.jsonl", 1160),
    "vg_qa_two_obj": Subset("vg_qa_two_obj.json", "vg_images", "two_obj",
                            ("left", "right", "front", "behind", "above", "below"),
                            "VG_QA_two_obj_with_answer_six_options.jsonl", 291),
}
ALIASES = {"a": "controlled_a", "b": "controlled_b", "controlled_images_a": "controlled_a",
           "controlled_images_b": "controlled_b", "coco_one": "coco_qa_one_obj", "coco_two": "coco_qa_two_obj",
           "vg_one": "vg_qa_one_obj", "vg_two": "vg_qa_two_obj"}
CONTROLLED_ANSWERS = {"on": "On", "under": "Under", "left": "Left", "right": "Right", "in-front": "Front",
                      "behind": "Behind"}
LAYOUT = "\n".join("  <root>/" + s.annotation + "   <root>/" + s.image_dir + "/..." for s in SUBSETS.values())


def subset_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in SUBSETS:
        raise InputError(f"unknown WhatsUp subset {name!r}; use one of {', '.join(SUBSETS)}")
    return key


def options_text(options: tuple[str, ...]) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1]


def verb_for(subject: str) -> str:
    """ "are" for plural-looking names (shoes, sunglasses), "is" otherwise (glass, bus, cactus)."""
    return "are" if subject.endswith("s") and not subject.endswith(("ss", "us")) else "is"


def question_for(subset: Subset, subject: str, obj: str) -> str:
    """AdaptVis's question for a record (the dominant form of their prompt files)."""
    be = verb_for(subject)
    if subset.kind == "one_obj":
        return f"Where {be} the {subject} in the photo? Answer with {options_text(subset.options)}."
    return f"Where {be} the {subject} in relation to the {obj}? Answer with {options_text(subset.options)}."


_CAPTION_PHRASES = (  # (phrase inside a caption, gold answer word), longest first
    (" to the left of ", "Left"), (" to the right of ", "Right"), (" in front of ", "Front"),
    (" behind ", "Behind"), (" above ", "Above"), (" below ", "Below"), (" under ", "Under"), (" on ", "On"),
)


def _strip_article(text: str) -> str:
    return re.sub(r"^(a|an|the)\s+", "", text.strip(), flags=re.I)


def parse_caption(caption: str, kind: str) -> tuple[str, str, str]:
    """(subject, object, gold answer) of a COCO/VG caption such as "A photo of a cup to the left of a plate"."""
    text = re.sub(r"^a photo of\s+", "", caption.strip().rstrip("."), flags=re.I)
    if kind == "one_obj":  # "... dining table on the bottom"
        match = re.match(r"^(.*?)\s+(?:on|to|at|in)\s+the\s+(\w+)$", text)
        if not match:
            raise ValueError(f"cannot read subject and position from caption {caption!r}")
        return _strip_article(match.group(1)), "", match.group(2).capitalize()
    for phrase, gold in _CAPTION_PHRASES:
        if phrase in f" {text} ":
            subject, obj = f" {text} ".split(phrase, 1)
            return _strip_article(subject), _strip_article(obj), gold
    raise ValueError(f"cannot find a relation in caption {caption!r}")


def _read_records(path: Path, kind: str) -> list:
    try:
        records = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}:1: expected a JSON list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        ok = (isinstance(rec, dict) and isinstance(rec.get("image_path"), str) and "caption_options" in rec) \
            if kind == "controlled" else (isinstance(rec, list) and len(rec) == 3 and isinstance(rec[0], (str, int))
                                          and not isinstance(rec[0], bool) and all(isinstance(c, str) for c in rec[1:]))
        if not ok:
            shape = "{image_path: string, caption_options}" if kind == "controlled" else \
                "[image_id, correct caption, wrong caption] (an id and two strings)"
            raise DataError(f"{path}: record {i} is malformed: expected {shape}, got {json.dumps(rec)[:120]}")
    return records


def _record_fields(subset: Subset, root: Path, rec) -> tuple[Path, str, str, str]:
    """(image path, subject, object, gold answer word) of one release record."""
    if subset.kind == "controlled":
        file = Path(rec["image_path"]).name
        parts = Path(file).stem.split("_")
        subject, prep, obj = parts[0].replace("-", " "), parts[1], parts[-1].replace("-", " ")
        if prep not in CONTROLLED_ANSWERS:
            raise ValueError(f"unknown preposition {prep!r} in image name {file!r}")
        return root / subset.image_dir / file, subject, obj, CONTROLLED_ANSWERS[prep]
    image_id = rec[0]
    file = f"{int(image_id):012d}.jpg" if subset.image_dir == "val2017" else f"{image_id}.jpg"
    subject, obj, gold = parse_caption(rec[1], subset.kind)
    return root / subset.image_dir / file, subject, obj, gold


def _prompt_question(prompt: str) -> str:
    """The question inside an AdaptVis prompt ``"<image>\\nUSER: {q}\\nASSISTANT:"``."""
    match = re.search(r"USER:(.*?)ASSISTANT:", prompt, flags=re.S)
    return (match.group(1) if match else prompt.replace("<image>", "")).strip()


def options_in(question: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    """Options named by "Answer with a, b, or c." (AdaptVis's prompts vary in commas and dots)."""
    match = re.search(r"Answer with (.+?)\s*\.*\s*$", question, flags=re.S)
    if not match:
        return fallback
    words = [w.strip().lower() for w in re.split(r",\s*or\s+|,\s*|\s+or\s+", match.group(1)) if w.strip()]
    return tuple(words) if len(words) >= 2 else fallback


def load_whatsup(subset: str, root: str | Path, split: str | None = None, limit: int | None = None,
                 prompts: str | Path | None = None, images: bool = True) -> Dataset:
    """One WhatsUp subset. ``split``: None (all), "val" (AdaptVis's 20%) or "test" (the other 80%)."""
    name = subset_name(subset)
    spec = SUBSETS[name]
    root = Path(root).expanduser()
    ann = root / spec.annotation
    if not ann.is_file():
        raise MissingInput(f"whatsup:{name}: no annotation file {ann}\nexpected the official release layout:\n"
                                f"{LAYOUT}")
    records = _read_records(ann, spec.kind)
    prompt_rows = None
    sources = [str(ann)]
    if prompts is not None:
        pfile = Path(prompts).expanduser() / spec.prompt_file
        if not pfile.is_file():
            raise MissingInput(f"whatsup:{name}: no AdaptVis prompt file {pfile}")
        prompt_rows = read_jsonl(pfile)
        sources.append(str(pfile))
        if len(prompt_rows) != len(records):
            raise DataError(f"{pfile}: {len(prompt_rows)} prompts for {len(records)} records in {ann}; "
                            f"the prompt file must have one line per record, in order")
    indices = list(range(len(records))) if split is None else adaptvis_split(len(records), split)
    if limit is not None:
        indices = indices[:limit]
    examples, skipped, paths = [], Counter(), []
    for i in indices:
        try:
            path, subject, obj, gold = _record_fields(spec, root, records[i])
        except ValueError as err:
            skipped[f"unreadable record ({err})"[:80]] += 1
            continue
        question = question_for(spec, subject, obj)
        meta = {"record": i, "gold": gold, "subset": name, "image_path": str(path)}
        if prompt_rows is not None:
            lineno, row = prompt_rows[i]
            where = f"{sources[-1]}:{lineno}"
            answer = row.get("answer")
            file_gold = answer[0] if isinstance(answer, list) and answer else answer
            if not isinstance(file_gold, str) or not isinstance(row.get("question"), str):
                raise DataError(f"{where}: expected {{'id', 'question', 'answer': [word]}}")
            if file_gold.lower() != gold.lower():
                raise DataError(f"{where}: answer {file_gold!r} disagrees with record {i} of {ann} ({gold!r})")
            question = _prompt_question(row["question"])
            meta["adaptvis_prompt"] = row["question"]
        options = options_in(question, spec.options)
        answer = gold.lower()
        if answer not in options:
            skipped["answer not among the prompt's options"] += 1
            continue
        paths.append(path)
        examples.append(Example(
            id=f"whatsup-{name}-{i:05d}", image=path if images else None, prompt=question, options=options,
            answer=answer, function=canonical_function("relational" if spec.kind != "one_obj" else "spatial"),
            relation=answer, subject=subject, object=obj, meta=meta))
    if images:
        check_images(paths, f"whatsup:{name}", LAYOUT)
    return Dataset(name=f"whatsup:{name}", examples=tuple(examples), scorer="whatsup", split=split,
                   n_records=len(records), skipped=dict(skipped), sources=tuple(sources))
