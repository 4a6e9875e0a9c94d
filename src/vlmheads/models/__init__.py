"""Model layer: adapters per VLM family, loading, and tiny random models for tests."""

from .adapter import Adapter, AdapterError, HeadGeometry
from .loading import LoadedModel, load_model, organism_path, wrap_model
from .registry import ADAPTERS, UnsupportedModelError, find_adapter, supported_families

__all__ = ["ADAPTERS", "Adapter", "AdapterError", "HeadGeometry", "LoadedModel", "UnsupportedModelError",
           "find_adapter", "load_model", "organism_path", "supported_families", "wrap_model"]
