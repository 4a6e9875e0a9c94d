"""Option-likelihood scoring: which of an example's options does the model find most likely?

Each option is scored by the summed log-probability of its tokens as the continuation of the chat
prompt (``prompt + " " + option``). When every option of a batch is one token (the organism, and
most single-word answers), one forward pass of the prompts suffices: the options' log-probabilities
are read off the last position. Otherwise each (example, option) pair runs as its own sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..data.example import Example
from ..models.loading import LoadedModel
from ..errors import InputError


@dataclass(frozen=True)
class OptionScore:
    example_id: str
    logprobs: tuple[float, ...]  # one per option, in the example's option order
    predicted: int
    answer: int

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer

    @property
    def logit_diff(self) -> float:
        """Correct option minus the best wrong option (log-probability units)."""
        wrong = [lp for i, lp in enumerate(self.logprobs) if i != self.answer]
        return self.logprobs[self.answer] - max(wrong)


def continuation_ids(tokenizer, prompt: str, option: str) -> list[int]:
    """Token ids that ``option`` adds after ``prompt`` (as the model would generate it)."""
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + " " + option, add_special_tokens=False)["input_ids"]
    if full[:len(base)] != base or len(full) == len(base):
        raise InputError(f"option {option!r} does not tokenize as a continuation of the prompt")
    added = full[len(base):]
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in added:
        raise InputError(f"the model's tokenizer cannot spell the answer option {option!r} (it becomes "
                         f"{tokenizer.unk_token}): this model cannot answer this dataset's questions; use a "
                         f"dataset in its vocabulary (the organism knows its own scenes' words: organism:*)")
    return added


def _single_token_batch(loaded: LoadedModel, batch: Sequence[Example], option_ids) -> list[list[float]]:
    enc = loaded.encode_examples(batch)
    with torch.no_grad():
        last = loaded.last_logits(enc).float().log_softmax(-1)  # [B, vocab]
    return [[float(row[ids[0]]) for ids in opts] for row, opts in zip(last, option_ids)]


def _full_sequence_batch(loaded: LoadedModel, batch: Sequence[Example], option_ids) -> list[list[float]]:
    out = []
    for example, opts in zip(batch, option_ids):
        enc = loaded.encode([example.prompt] * len(opts), [example.image] * len(opts))
        n_prompt = enc["input_ids"].shape[1]
        ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(o) for o in opts], batch_first=True,
                                              padding_value=loaded.tokenizer.pad_token_id or 0).to(loaded.device)
        lengths = torch.tensor([len(o) for o in opts], device=loaded.device)
        enc["input_ids"] = torch.cat([enc["input_ids"], ids], dim=1)  # [n_options, n_prompt + max_len]
        enc["attention_mask"] = torch.cat([enc["attention_mask"],
                                           (torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]).long()],
                                          dim=1)
        if "mm_token_type_ids" in enc:
            enc["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(ids)], dim=1)
        with torch.no_grad():
            logp = loaded.model(**enc).logits.float().log_softmax(-1)  # [n_options, S, vocab]
        scores = []
        for i, o in enumerate(opts):
            steps = logp[i, n_prompt - 1:n_prompt - 1 + len(o)]  # position t predicts token t+1
            scores.append(float(steps[torch.arange(len(o)), torch.tensor(o)].sum()))
        out.append(scores)
    return out


def score_options(loaded: LoadedModel, examples: Sequence[Example], batch_size: int = 32,
                  full_sequences: bool = False) -> list[OptionScore]:
    """Score every option of every example. ``full_sequences`` forces the general path."""
    if not examples:
        raise InputError("no examples to score: the dataset is empty")
    tok = loaded.tokenizer
    results = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        prompts = [loaded.chat_prompt(e.prompt) for e in batch]
        option_ids = [[continuation_ids(tok, p, o) for o in e.options] for p, e in zip(prompts, batch)]
        single = all(len(ids) == 1 for opts in option_ids for ids in opts)
        if single and not full_sequences:
            scores = _single_token_batch(loaded, batch, option_ids)
        else:
            scores = _full_sequence_batch(loaded, batch, option_ids)
        for e, s in zip(batch, scores):
            results.append(OptionScore(e.id, tuple(s), max(range(len(s)), key=s.__getitem__), e.answer_index))
    return results
