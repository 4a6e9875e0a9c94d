"""Examples drawn from the model organism's scene generator (``organism:train`` / ``organism:controlled``)."""

from __future__ import annotations

import random

from ..organism.questions import ORGANISM_FUNCTIONS, sample_question
from ..organism.scenes import RELATIONS, SPLITS, render, sample_scene
from .example import Example
from .functions import canonical_function


def organism_examples(n: int, seed: int = 0, function: str | None = None,
                      split: str = "train") -> list[Example]:
    """``n`` examples of fresh rendered scenes, reproducible from ``(seed, split)``.

    ``function`` (a name or alias, e.g. ``"spatial"``) restricts the sub-questions to one cognitive
    function; ``None`` cycles through the organism's four. ``split="train"`` follows the training
    distribution (with its textual priors); ``"controlled"`` balances the relations so that every
    object pair appears in every relation (``meta["prior"]`` says whether a scene follows the prior).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in SPLITS:
        raise ValueError(f"unknown organism split {split!r}; expected one of {SPLITS}")
    functions = ORGANISM_FUNCTIONS if function is None else (canonical_function(function),)
    for f in functions:
        if f not in ORGANISM_FUNCTIONS:
            raise ValueError(f"the organism has no {f!r} questions; it has {', '.join(ORGANISM_FUNCTIONS)}")
    examples = []
    for i in range(n):
        rng = random.Random(f"organism/{split}/{seed}/{i}")
        forced = RELATIONS[i % len(RELATIONS)] if split == "controlled" else None
        scene = sample_scene(rng, split=split, relation=forced)
        q = sample_question(scene, functions[i % len(functions)], rng)
        examples.append(Example(
            id=f"organism-{split}-{seed}-{i:06d}",
            image=render(scene),
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


def organism_vsr_examples(n: int, seed: int = 0) -> list[Example]:
    """VSR-style true/false statements about controlled scenes, labels exactly balanced.

    Even indices state the scene's true relation, odd ones a false one; the relations cycle so
    that every relation appears in true and false statements alike.
    """
    from ..organism.questions import decision_question

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    examples = []
    for i in range(n):
        rng = random.Random(f"organism/vsr/{seed}/{i}")
        scene = sample_scene(rng, split="controlled", relation=RELATIONS[(i // 2) % len(RELATIONS)])
        claimed = scene.relation if i % 2 == 0 else rng.choice([r for r in RELATIONS if r != scene.relation])
        q = decision_question(scene, claimed)
        examples.append(Example(
            id=f"organism-vsr-{seed}-{i:06d}", image=render(scene), prompt=q.text, options=q.options,
            answer=q.answer, function=q.function, relation=scene.relation, subject=scene.subject.name,
            object=scene.reference.name,
            meta={"split": "vsr", "seed": seed, "index": i, "prior": scene.prior, "label": int(q.answer == "yes"),
                  "statement_relation": claimed, "n_objects": len(scene.objects),
                  "layout": [[o.name, o.row, o.col] for o in scene.objects]}))
    return examples
