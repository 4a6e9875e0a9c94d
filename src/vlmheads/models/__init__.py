"""Model layer: adapters per VLM family (declared, or read from the model), loading, and refusals."""

from .adapter import Adapter, AdapterError, HeadGeometry
from .generic import derive_adapter
from .loading import LoadedModel, load_model, organism_path, wrap_model
from .registry import (ADAPTERS, GENERIC_FAMILIES, REFUSALS, UnsupportedModelError, adapter_for, find_adapter,
                       register_adapter, supported_families)

__all__ = ["ADAPTERS", "Adapter", "AdapterError", "GENERIC_FAMILIES", "HeadGeometry", "LoadedModel", "REFUSALS",
           "UnsupportedModelError", "adapter_for", "derive_adapter", "find_adapter", "load_model", "organism_path",
           "register_adapter", "supported_families", "wrap_model"]
