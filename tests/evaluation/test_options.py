import pytest
import torch

from vlmheads.data import organism_examples
from vlmheads.evaluation.options import OptionScore, continuation_ids, score_options
from vlmheads.world.scenes import CLEAN


def test_single_token_path_equals_full_sequence_path(organism):
    examples = organism_examples(8, seed=3, split="controlled", rendering=CLEAN)
    fast = score_options(organism, examples, batch_size=8)
    full = score_options(organism, examples, batch_size=8, full_sequences=True)
    for a, b in zip(fast, full):
        assert a.predicted == b.predicted
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


def test_logit_diff_and_correct_by_hand():
    s = OptionScore("x", (-0.1, -2.0, -3.0), predicted=0, answer=0)
    assert s.correct and s.logit_diff == pytest.approx(1.9)
    s = OptionScore("x", (-0.1, -2.0, -3.0), predicted=0, answer=2)
    assert not s.correct and s.logit_diff == pytest.approx(-2.9)


def test_continuation_ids(organism):
    tok = organism.tokenizer
    prompt = organism.chat_prompt("What colour is the cross?")
    assert continuation_ids(tok, prompt, "red") == [tok.convert_tokens_to_ids("red")]


def test_empty_dataset_is_an_error(organism):
    with pytest.raises(ValueError, match="dataset is empty"):
        score_options(organism, [])
