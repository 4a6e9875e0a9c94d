"""vlmheads: head-level mechanistic interpretability of spatial reasoning in vision-language models."""

from .models import HeadGeometry, LoadedModel, load_model, wrap_model

__version__ = "0.1.0"
__all__ = ["HeadGeometry", "LoadedModel", "__version__", "load_model", "wrap_model"]
