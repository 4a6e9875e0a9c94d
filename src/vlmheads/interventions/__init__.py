"""Interventions on heads and on attention to the image: ``from vlmheads.interventions import apply, ...``.

Values (``values.py``) install themselves; ``apply`` (``core.py``) composes them and always cleans up.
Directions for ``Steer`` and ``VisionBoost`` are fitted by ``vlmheads.methods.directions``.
"""

from .core import adaptvis_alpha, adaptvis_logits, apply
from .installation import Installation
from .values import (INTERVENTIONS, Ablate, AdaptVis, Emphasize, Intervention, InterventionError, RandomScaling,
                     ScalingVis, Steer, Suppress, VisionBoost, from_json)

__all__ = ["INTERVENTIONS", "Ablate", "AdaptVis", "Emphasize", "Installation", "Intervention", "InterventionError",
           "RandomScaling", "ScalingVis", "Steer", "Suppress", "VisionBoost", "adaptvis_alpha", "adaptvis_logits", "apply", "from_json"]
