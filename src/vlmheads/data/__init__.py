"""Datasets: one example type (``Example``), one registry (``load``), the evaluation protocols."""

from .dataset import DataError, Dataset
from .example import Example
from .functions import ALIASES, FUNCTIONS, canonical_function
from .images import MissingImagesError, as_pil
from .organism import default_organism_rendering, organism_examples, organism_pairs, organism_vsr_examples
from .registry import KNOWN, load

__all__ = ["ALIASES", "FUNCTIONS", "KNOWN", "DataError", "Dataset", "Example", "MissingImagesError", "as_pil",
           "canonical_function", "default_organism_rendering", "load", "organism_examples", "organism_pairs",
           "organism_vsr_examples"]
