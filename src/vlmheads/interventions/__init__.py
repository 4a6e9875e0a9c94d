"""Interventions on heads and on attention to the image: ``from vlmheads.interventions import apply, ...``."""

from .core import adaptvis_alpha, adaptvis_logits, apply
from .layout import layout_directions
from .steering import steering_directions
from .values import Ablate, AdaptVis, Emphasize, ScalingVis, Steer, VisionBoost

__all__ = ["Ablate", "AdaptVis", "Emphasize", "ScalingVis", "adaptvis_alpha", "adaptvis_logits", "Steer", "VisionBoost", "apply", "layout_directions", "steering_directions"]
