"""Where the spatial relation flows: attention knockout by edge class and layer window (causal)."""

from .knockout import EDGES, edge_mask, knockout, knockout_drops, knockout_effects, windows

__all__ = ["EDGES", "edge_mask", "knockout", "knockout_drops", "knockout_effects", "windows"]
