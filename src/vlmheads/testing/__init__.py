"""Tiny random VLMs of every supported family, built from their real transformers configs, with their
real processor classes: for tests and for smoke runs before paying for GPU time.

    from vlmheads.testing import TINY_BUILDERS, tiny_llava, tiny_processor
"""

from .tiny import TINY_BUILDERS, tiny_llava
from .tiny_processors import tiny_processor

__all__ = ["TINY_BUILDERS", "tiny_llava", "tiny_processor"]
