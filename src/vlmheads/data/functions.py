"""The cognitive functions that label sub-questions (CogVSR's eight) and their short aliases."""

from __future__ import annotations

from ..errors import InputError

FUNCTIONS = (
    "spatial_perception",
    "relational_reasoning",
    "low_level_visual_perception",
    "high_level_visual_perception",
    "information_extraction",
    "knowledge_recall",
    "math_reasoning",
    "decision_making",
)

ALIASES = {
    "spatial": "spatial_perception",
    "relational": "relational_reasoning",
    "relation": "relational_reasoning",
    "object": "low_level_visual_perception",
    "visual": "low_level_visual_perception",
    "low_level": "low_level_visual_perception",
    "high_level": "high_level_visual_perception",
    "information": "information_extraction",
    "knowledge": "knowledge_recall",
    "math": "math_reasoning",
    "decision": "decision_making",
}


def canonical_function(name: str) -> str:
    """Full function name for a name or alias (``"spatial"`` -> ``"spatial_perception"``)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in FUNCTIONS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    known = ", ".join(FUNCTIONS)
    short = ", ".join(sorted(ALIASES))
    raise InputError(f"unknown cognitive function {name!r}; use one of: {known} (or an alias: {short})")
