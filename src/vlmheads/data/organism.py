"""Examples drawn from the model organism's scene generator (``organism:train`` / ``organism:controlled``)."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

from ..world.questions import ORGANISM_FUNCTIONS, sample_question
from ..world.scenes import RELATIONS, SPLITS, Rendering, declared_rendering, render, sample_scene
from .example import Example
from .functions import canonical_function
from ..errors import InputError

# the shipped default organism's saved config (read as a file: the data floor imports no model code)
_DEFAULT_ORGANISM_CONFIG = Path(__file__).resolve().parents[1] / "organism" / "weights" / "config.json"


@lru_cache(maxsize=1)
def default_organism_rendering() -> Rendering:
    """How the shipped default organism (``--model organism``) sees its scenes: the rendering its
    ``config.json`` declares (``vlmheads_rendering``; weakened, on a wider canvas), clean if none."""
    return Rendering.from_dict(declared_rendering(_DEFAULT_ORGANISM_CONFIG))


def _rendering(rendering: Rendering | None) -> Rendering:
    return default_organism_rendering() if rendering is None else rendering


def organism_examples(n: int, seed: int = 0, function: str | None = None,
                      split: str = "train", rendering: Rendering | None = None) -> list[Example]:
    """``n`` examples of fresh rendered scenes, reproducible from ``(seed, split)``.

    ``function`` (a name or alias, e.g. ``"spatial"``) restricts the sub-questions to one cognitive
    function; ``None`` cycles through the organism's four. ``split="train"`` follows the training
    distribution (with its textual priors); ``"controlled"`` balances the relations so that every
    object pair appears in every relation (``meta["prior"]`` says whether a scene follows the prior).
    ``rendering``: how the scenes are drawn (the same scenes and questions whatever it is). None (the
    default) draws them as the default organism sees them (``default_organism_rendering``); for another
    model pass its own, ``loaded.rendering`` (or use ``loaded.examples(...)``), or ``CLEAN``. Scoring a
    model on scenes drawn for another warns once (``RenderingMismatch``).
    """
    rendering = _rendering(rendering)
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    if split not in SPLITS:
        raise InputError(f"unknown organism split {split!r}; expected one of {SPLITS}")
    functions = ORGANISM_FUNCTIONS if function is None else (canonical_function(function),)
    for f in functions:
        if f not in ORGANISM_FUNCTIONS:
            raise InputError(f"the organism has no {f!r} questions; it has {', '.join(ORGANISM_FUNCTIONS)}")
    examples = []
    for i in range(n):
        rng = random.Random(f"organism/{split}/{seed}/{i}")
        forced = RELATIONS[i % len(RELATIONS)] if split == "controlled" else None
        scene = sample_scene(rng, split=split, relation=forced)
        q = sample_question(scene, functions[i % len(functions)], rng)
        examples.append(Example(
            id=f"organism-{split}-{seed}-{i:06d}",
            image=render(scene, rendering),
            prompt=q.text,
            options=q.options,
            answer=q.answer,
            function=q.function,
            relation=scene.relation,
            subject=scene.subject.name,
            object=scene.reference.name,
            meta={"split": split, "seed": seed, "index": i, "prior": scene.prior, "target": q.target,
                  "statement_relation": q.statement_relation, "n_objects": len(scene.objects),
                  "layout": [[o.name, o.row, o.col] for o in scene.objects]},
        ))
    return examples


def organism_vsr_examples(n: int, seed: int = 0, rendering: Rendering | None = None) -> list[Example]:
    """VSR-style true/false statements about controlled scenes, labels exactly balanced.

    Even indices state the scene's true relation, odd ones a false one; the relations cycle so
    that every relation appears in true and false statements alike. ``rendering`` as in
    ``organism_examples`` (None: the default organism's).
    """
    rendering = _rendering(rendering)
    from ..world.questions import decision_question

    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    examples = []
    for i in range(n):
        rng = random.Random(f"organism/vsr/{seed}/{i}")
        scene = sample_scene(rng, split="controlled", relation=RELATIONS[(i // 2) % len(RELATIONS)])
        claimed = scene.relation if i % 2 == 0 else rng.choice([r for r in RELATIONS if r != scene.relation])
        q = decision_question(scene, claimed)
        examples.append(Example(
            id=f"organism-vsr-{seed}-{i:06d}", image=render(scene, rendering), prompt=q.text, options=q.options,
            answer=q.answer, function=q.function, relation=scene.relation, subject=scene.subject.name,
            object=scene.reference.name,
            meta={"split": "vsr", "seed": seed, "index": i, "prior": scene.prior, "label": int(q.answer == "yes"),
                  "statement_relation": claimed, "n_objects": len(scene.objects),
                  "layout": [[o.name, o.row, o.col] for o in scene.objects]}))
    return examples


def organism_pairs(n: int, seed: int = 0, function: str = "spatial",
                   rendering: Rendering | None = None) -> list[tuple[Example, Example]]:
    """Counterfactual (clean, corrupted) pairs: same question text, a re-rendered image whose answer differs.

    Only the image changes, so the two prompts tokenize identically and every position lines up:

    * spatial / relational / decision: the subject and the reference object swap cells (the relation
      inverts; the subject moves to the reference's quadrant). Decision statements claim the true
      relation or its inverse, so their answer flips too.
    * object perception: the subject and the reference swap colours (the question names the
      subject by one attribute; the other now belongs to a different object).

    ``rendering`` as in ``organism_examples`` (None: the default organism's).
    """
    rendering = _rendering(rendering)
    from dataclasses import replace

    from ..world.questions import (colour_question, decision_question, quadrant_question, relation_question,
                                      shape_question)
    from ..world.scenes import INVERSE

    function = canonical_function(function)
    if function not in ORGANISM_FUNCTIONS:
        raise InputError(f"the organism has no {function!r} questions; it has {', '.join(ORGANISM_FUNCTIONS)}")
    pairs = []
    for i in range(n):
        rng = random.Random(f"organism/pairs/{function}/{seed}/{i}")
        scene = sample_scene(rng, split="controlled", relation=RELATIONS[i % len(RELATIONS)])
        subj, ref = scene.subject, scene.reference
        if function == "low_level_visual_perception":
            objects = (replace(subj, colour=ref.colour), replace(ref, colour=subj.colour)) + scene.objects[2:]
            corrupt = replace(scene, objects=objects)
            by_colour = rng.random() < 0.5
            clean_q = shape_question(subj) if by_colour else colour_question(subj)
            twin = next(o for o in objects if (o.colour == subj.colour if by_colour else o.shape == subj.shape))
            corrupt_answer = twin.shape if by_colour else twin.colour
        else:
            objects = (replace(subj, row=ref.row, col=ref.col), replace(ref, row=subj.row, col=subj.col)) \
                + scene.objects[2:]
            corrupt = replace(scene, objects=objects, relation=INVERSE[scene.relation])
            if function == "spatial_perception":
                clean_q = quadrant_question(subj)
                corrupt_answer = objects[0].quadrant
            elif function == "relational_reasoning":
                clean_q = relation_question(scene)
                corrupt_answer = corrupt.relation
            else:
                claimed = scene.relation if i % 2 == 0 else INVERSE[scene.relation]
                clean_q = decision_question(scene, claimed)
                corrupt_answer = decision_question(corrupt, claimed).answer
        pair = []
        for tag, sc, answer in (("clean", scene, clean_q.answer), ("corrupt", corrupt, corrupt_answer)):
            pair.append(Example(
                id=f"organism-pair-{function}-{seed}-{i:06d}-{tag}", image=render(sc, rendering), prompt=clean_q.text,
                options=clean_q.options, answer=answer, function=function, relation=sc.relation,
                subject=sc.subject.name, object=sc.reference.name,
                meta={"split": "controlled", "seed": seed, "index": i, "prior": sc.prior, "pair": tag,
                      "layout": [[o.name, o.row, o.col] for o in sc.objects]}))
        if pair[0].answer == pair[1].answer:  # pragma: no cover - guaranteed by construction, checked by tests
            raise AssertionError(f"pair {i} of {function} did not change the answer")
        pairs.append((pair[0], pair[1]))
    return pairs
