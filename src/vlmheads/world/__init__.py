"""The organism's world: rendered scenes and the CogVSR-style questions asked about them.

The bottom floor of the library: it imports nothing of vlmheads. ``vlmheads.data`` turns scenes into
examples; ``vlmheads.organism`` trains and evaluates the model organism on them.
"""
