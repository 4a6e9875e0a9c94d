"""Where the suite meets a model: every reading and every change goes through one of these sites.

    heads       per-head attention outputs z [B, S, H, D] at o_proj's input (``vlmheads.site``, too)
    attention   the registered attention function (scale image-key logits, cut edges), the text
                decoder's switch to it, and the eager pass with every layer's attention probabilities
    residual    the first decoder layer's input, where the image tokens enter the language model

``vlmheads.tracing`` is the same head site seen through nnsight, and the oracle the readers are tested
against. ``interventions/`` composes values that install themselves here; ``methods/`` and ``flow/``
read and cut here.
"""
