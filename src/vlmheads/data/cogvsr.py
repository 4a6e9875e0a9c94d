"""CogVSR-style decomposed questions: a documented JSONL schema, its loader and an organism writer.

One line per main question::

    {"id": "scene-000001",
     "image": "images/scene-000001.png",          # relative to the JSONL file's folder, or absolute
     "question": "Where is the red circle in relation to the blue square?",
     "answer": "left", "options": ["left", "right", "above", "below"],
     "subject": "red circle", "object": "blue square", "relation": "left",   # optional
     "sub_questions": [                            # ordered, at least one
        {"text": "What colour is the circle?", "answer": "red",
         "options": ["red", "green", "blue", "yellow"], "function": "low_level_visual_perception"},
        ...]}

``function`` is one of CogVSR's eight cognitive functions (``vlmheads.data.FUNCTIONS``; short
aliases such as "spatial" are accepted and stored in full). Every answer must be one of its
options. A user with real decompositions (by hand or by an LLM) writes this file and runs the same
pipeline; ``write_organism_cogvsr`` writes it for organism scenes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from .dataset import DataError, Dataset, need, optional, read_jsonl
from .example import Example
from .functions import FUNCTIONS, canonical_function
from .images import check_images
from .protocols import adaptvis_split
from ..errors import InputError, MissingInput

SCHEMA_FIELDS = {"id": (str, int), "image": str, "question": str, "answer": str, "options": list,
                 "sub_questions": list}  # field: its JSON type
OPTIONAL_FIELDS = {"subject": str, "object": str, "relation": str, "function": str, "meta": dict}
SUB_FIELDS = {"text": str, "answer": str, "options": list, "function": str}


def _options(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(o, str) for o in value):
        raise DataError(f"{where}: 'options' must be a list of at least two strings, got {json.dumps(value)[:80]}")
    return tuple(value)


def _function(value, where: str) -> str:
    try:
        return canonical_function(str(value))
    except ValueError:
        raise DataError(f"{where}: unknown function {value!r}; use one of {', '.join(FUNCTIONS)}") from None


def load_cogvsr(path: str | Path, split: str | None = None, limit: int | None = None,
                function: str | None = None, include_main: bool = False, images: bool = True) -> Dataset:
    """Sub-questions of a decomposition file as examples (one per sub-question, in order).

    ``split`` applies AdaptVis's 20/80 split to the *main questions* (a scene's sub-questions stay
    together); ``function`` keeps one function's sub-questions; ``include_main`` adds the main
    questions themselves (function from their optional ``"function"`` field, default relational).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInput(f"cogvsr: no decomposition file {path} (JSONL, schema in vlmheads.data.cogvsr)")
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: the file has no records")
    keep = canonical_function(function) if function else None
    indices = list(range(len(rows))) if split is None else adaptvis_split(len(rows), split)
    if limit is not None:
        indices = indices[:limit]
    examples, paths, skipped = [], [], Counter()
    for i in indices:
        lineno, rec = rows[i]
        where = f"{path}:{lineno}"
        for key, kind in SCHEMA_FIELDS.items():
            need(rec, key, where, kind)
        for key, kind in OPTIONAL_FIELDS.items():
            optional(rec, key, where, kind)
        main_options = _options(rec["options"], where)
        if rec["answer"] not in main_options:
            raise DataError(f"{where}: answer {rec['answer']!r} is not among the options {main_options}")
        subs = rec["sub_questions"]
        if not isinstance(subs, list) or not subs:
            raise DataError(f"{where}: 'sub_questions' must be a non-empty list")
        image = Path(rec["image"])
        image = image if image.is_absolute() else path.parent / image
        common = dict(relation=str(rec.get("relation", "")), subject=str(rec.get("subject", "")),
                      object=str(rec.get("object", "")))
        items = []
        if include_main:
            items.append((-1, rec["question"], rec["answer"], main_options,
                          _function(rec.get("function", "relational_reasoning"), where)))
        for k, sub in enumerate(subs):
            sub_where = f"{where} (sub_questions[{k}])"
            if not isinstance(sub, dict):
                raise DataError(f"{sub_where}: expected an object with fields {', '.join(SUB_FIELDS)}")
            for key, kind in SUB_FIELDS.items():
                need(sub, key, sub_where, kind)
            opts = _options(sub["options"], sub_where)
            if sub["answer"] not in opts:
                raise DataError(f"{sub_where}: answer {sub['answer']!r} is not among the options {opts}")
            items.append((k, sub["text"], sub["answer"], opts, _function(sub["function"], sub_where)))
        for k, text, answer, opts, fn in items:
            if keep is not None and fn != keep:
                skipped[f"other functions than {keep}"] += 1
                continue
            paths.append(image)
            examples.append(Example(
                id=f"{rec['id']}/{'main' if k < 0 else f'sub{k}'}", image=image if images else None, prompt=text,
                options=opts, answer=answer, function=fn, **common,
                meta={"main_id": rec["id"], "step": k, "main_question": rec["question"],
                      "main_answer": rec["answer"], "record": i, **rec.get("meta", {})}))
    if images:
        check_images(paths, f"cogvsr:{path}", "  images named by each record's 'image' field, relative to "
                                              f"{path.parent}")
    return Dataset(name=f"cogvsr:{path}", examples=tuple(examples), scorer="exact", split=split,
                   n_records=len(rows), skipped=dict(skipped), sources=(str(path),))


def write_organism_cogvsr(out_dir: str | Path, n: int, seed: int = 0, split: str = "controlled",
                          rendering=None) -> Path:
    """Decompose ``n`` organism scenes into the schema; writes ``decomposed.jsonl`` + ``images/``.
    ``rendering``: how the images are drawn (a ``Rendering``; default: as the default organism sees them,
    like ``organism_examples``), e.g. the model's own (``LoadedModel.rendering``) or ``CLEAN``. Each PNG
    keeps its rendering in a text chunk, so a model scored on the files warns as on rendered examples."""
    from PIL.PngImagePlugin import PngInfo

    from ..world.questions import decompose, relation_question
    from ..world.scenes import RELATIONS, RENDERING_TAG, render, sample_scene
    from .organism import default_organism_rendering

    rendering = default_organism_rendering() if rendering is None else rendering
    tag = PngInfo()
    tag.add_text(RENDERING_TAG, rendering.key)
    if n <= 0:
        raise InputError(f"n must be positive, got {n}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rng = random.Random(f"cogvsr/{split}/{seed}/{i}")
        scene = sample_scene(rng, split=split, relation=RELATIONS[i % len(RELATIONS)] if split == "controlled" else None)
        image = f"images/scene-{i:06d}.png"
        render(scene, rendering).save(out_dir / image, pnginfo=tag)
        main = relation_question(scene)
        lines.append(json.dumps({
            "id": f"organism-{split}-{seed}-{i:06d}", "image": image, "question": main.text, "answer": main.answer,
            "options": list(main.options), "subject": scene.subject.name, "object": scene.reference.name,
            "relation": scene.relation, "meta": {"prior": scene.prior},
            "sub_questions": [{"text": q.text, "answer": q.answer, "options": list(q.options), "function": q.function}
                              for q in decompose(scene)],
        }))
    path = out_dir / "decomposed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
