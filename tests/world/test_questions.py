import random

from vlmheads.organism.build import build_processor
from vlmheads.world.questions import (DECISION_FN, OBJECT_FN, ORGANISM_FUNCTIONS, RELATIONAL_FN, SPATIAL_FN,
                                         decompose, sample_question)
from vlmheads.world.scenes import sample_scene


def test_decomposition_is_ordered_and_labelled():
    scene = sample_scene(random.Random(3), "controlled", relation="below")
    chain = decompose(scene)
    assert [q.function for q in chain] == [OBJECT_FN, OBJECT_FN, SPATIAL_FN, SPATIAL_FN, RELATIONAL_FN, DECISION_FN]
    assert chain[0].answer == scene.subject.colour
    assert chain[1].answer == scene.reference.shape
    assert chain[2].answer == scene.subject.quadrant
    assert chain[4].answer == "below"
    assert chain[4].text.startswith(f"Where is the {scene.subject.name} in relation to the {scene.reference.name}?")
    assert chain[4].text.endswith("Answer with left, right, above or below.")
    assert chain[5].answer == "yes"
    for q in chain:
        assert q.answer in q.options


def test_decision_labels_are_balanced_and_true_to_the_scene():
    rng = random.Random(4)
    answers = []
    for _ in range(2000):
        scene = sample_scene(rng)
        q = sample_question(scene, DECISION_FN, rng)
        assert (q.answer == "yes") == (q.statement_relation == scene.relation)
        answers.append(q.answer)
    assert abs(answers.count("yes") / len(answers) - 0.5) < 0.04


def test_tokenizer_covers_every_question_with_one_token_per_option():
    processor = build_processor()
    tok = processor.tokenizer
    rng = random.Random(5)
    for _ in range(300):
        scene = sample_scene(rng)
        for function in ORGANISM_FUNCTIONS:
            q = sample_question(scene, function, rng)
            ids = tok(q.text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, q.text
            for option in q.options:
                assert len(tok(option, add_special_tokens=False)["input_ids"]) == 1
    assert tok.decode(tok("Where is the red circle?")["input_ids"]) == "Where is the red circle?"
