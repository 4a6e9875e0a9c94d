"""Tiny random VLMs of every supported family, built from their real transformers configs, with their
real processor classes: for tests and for smoke runs before paying for GPU time.

    from vlmheads.testing import TINY_BUILDERS, tiny_model, tiny_processor
    model, inputs, processor = tiny_model("gemma3")
"""

from .tiny import DECLARED_BUILDERS, tiny_llava
from .tiny_generic import GENERIC_BUILDERS
from .tiny_processors import tiny_processor
from ..errors import InputError

TINY_BUILDERS = {**DECLARED_BUILDERS, **GENERIC_BUILDERS}  # family -> builder(gqa=True, seed=0)


def tiny_model(family: str, gqa: bool = True, seed: int = 0):
    """``(model, inputs, processor)``: a tiny random copy of ``family`` (eager attention, eval mode), two
    valid inputs for it, and its real processor class over a word-level tokenizer."""
    if family not in TINY_BUILDERS:
        raise InputError(f"no tiny copy of family {family!r}; choose from {', '.join(TINY_BUILDERS)}")
    model, inputs, processor = TINY_BUILDERS[family](gqa=gqa, seed=seed)
    return model, inputs, processor or tiny_processor(family)


__all__ = ["DECLARED_BUILDERS", "GENERIC_BUILDERS", "TINY_BUILDERS", "tiny_llava", "tiny_model", "tiny_processor"]
