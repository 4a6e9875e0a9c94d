"""CogVSR-style sub-questions about organism scenes, each labelled with its cognitive function.

A scene's main question ("where is the subject relative to the object?") decomposes into ordered
sub-questions (see ``decompose``):

    low_level_visual_perception  what colour is the <shape> / what shape is the <colour> object
    spatial_perception           which part of the image is <object> in (quadrant)
    relational_reasoning         where is <subject> in relation to <object> (WhatsUp-style, 4 options)
    decision_making              is <subject> <relation> <object>? (VSR-style yes / no)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .scenes import COLOURS, QUADRANTS, RELATIONS, SHAPES, Scene, SceneObject
from ..errors import InputError

OBJECT_FN = "low_level_visual_perception"
SPATIAL_FN = "spatial_perception"
RELATIONAL_FN = "relational_reasoning"
DECISION_FN = "decision_making"
ORGANISM_FUNCTIONS = (OBJECT_FN, SPATIAL_FN, RELATIONAL_FN, DECISION_FN)

COLOUR_OPTIONS = tuple(COLOURS)
SHAPE_OPTIONS = SHAPES
QUADRANT_OPTIONS = QUADRANTS
RELATION_OPTIONS = RELATIONS
DECISION_OPTIONS = ("yes", "no")
RELATION_PHRASES = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


def _answer_with(options: tuple[str, ...]) -> str:
    return "Answer with " + ", ".join(options[:-1]) + " or " + options[-1] + "."


@dataclass(frozen=True)
class SubQuestion:
    text: str
    options: tuple[str, ...]
    answer: str
    function: str
    target: str  # the object the question is about ("" for pair questions)
    statement_relation: str = ""  # decision questions: the relation the statement claims


def colour_question(obj: SceneObject) -> SubQuestion:
    text = f"What colour is the {obj.shape}? {_answer_with(COLOUR_OPTIONS)}"
    return SubQuestion(text, COLOUR_OPTIONS, obj.colour, OBJECT_FN, obj.name)


def shape_question(obj: SceneObject) -> SubQuestion:
    text = f"What shape is the {obj.colour} object? {_answer_with(SHAPE_OPTIONS)}"
    return SubQuestion(text, SHAPE_OPTIONS, obj.shape, OBJECT_FN, obj.name)


def quadrant_question(obj: SceneObject) -> SubQuestion:
    text = f"Which part of the image is the {obj.name} in? {_answer_with(QUADRANT_OPTIONS)}"
    return SubQuestion(text, QUADRANT_OPTIONS, obj.quadrant, SPATIAL_FN, obj.name)


def relation_question(scene: Scene) -> SubQuestion:
    s, o = scene.subject.name, scene.reference.name
    text = f"Where is the {s} in relation to the {o}? {_answer_with(RELATION_OPTIONS)}"
    return SubQuestion(text, RELATION_OPTIONS, scene.relation, RELATIONAL_FN, "")


def decision_question(scene: Scene, claimed: str) -> SubQuestion:
    s, o = scene.subject.name, scene.reference.name
    text = f"Is the {s} {RELATION_PHRASES[claimed]} the {o}? {_answer_with(DECISION_OPTIONS)}"
    answer = "yes" if claimed == scene.relation else "no"
    return SubQuestion(text, DECISION_OPTIONS, answer, DECISION_FN, "", statement_relation=claimed)


def sample_question(scene: Scene, function: str, rng: random.Random) -> SubQuestion:
    """One sub-question of the given function about a random part of the scene."""
    if function == OBJECT_FN:
        obj = rng.choice(scene.objects)
        return colour_question(obj) if rng.random() < 0.5 else shape_question(obj)
    if function == SPATIAL_FN:
        return quadrant_question(rng.choice(scene.objects))
    if function == RELATIONAL_FN:
        return relation_question(scene)
    if function == DECISION_FN:
        if rng.random() < 0.5:
            claimed = scene.relation
        else:
            claimed = rng.choice([r for r in RELATIONS if r != scene.relation])
        return decision_question(scene, claimed)
    raise InputError(f"the organism has no {function!r} questions; it has {ORGANISM_FUNCTIONS}")


def decompose(scene: Scene) -> list[SubQuestion]:
    """The ordered CogVSR-style chain for the scene's main (relational) question."""
    return [
        colour_question(scene.subject),
        shape_question(scene.reference),
        quadrant_question(scene.subject),
        quadrant_question(scene.reference),
        relation_question(scene),
        decision_question(scene, scene.relation),
    ]


def vocabulary() -> list[str]:
    """Every word the organism's questions and answers use (the tokenizer's vocabulary)."""
    words = set(COLOUR_OPTIONS) | set(SHAPE_OPTIONS) | set(QUADRANT_OPTIONS) | set(RELATION_OPTIONS)
    words |= set(DECISION_OPTIONS)
    templates = [
        "What colour is the ? Answer with , or .",
        "What shape is the object ?",
        "Which part of the image is the in ?",
        "Where is the in relation to the ?",
        "Is the left of right of above below the ?",
        "USER : ASSISTANT :",
    ]
    for t in templates:
        words |= set(t.split())
    return sorted(words)
