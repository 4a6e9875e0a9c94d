"""Datasets: one example type (``Example``) and the cognitive-function labels."""

from .example import Example
from .functions import ALIASES, FUNCTIONS, canonical_function
from .organism import organism_examples

__all__ = ["ALIASES", "FUNCTIONS", "Example", "canonical_function", "organism_examples"]
