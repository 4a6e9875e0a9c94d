"""CogVision-style probing: does a head's output at the answer position tell which function is asked?

For every head, a logistic probe (one-vs-rest for the target function) is trained on the head's
output ``z[:, -1, head]`` of labelled sub-questions and scored by balanced accuracy on held-out
examples. All heads' probes train at once as one batched linear model ``[L * H, D] -> 1``.
Descriptive, not causal: a high score says the function is readable from the head.

``fit_softmax_probe`` is the one multinomial probe trainer (flow's relation probes, VisionBoost's layout
directions): full-batch Adam on cross-entropy, its initial weights drawn from its own seed without touching
the global generator.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError


def probe_scores(features: torch.Tensor, labels: Sequence[str], function: str, held_out: float = 0.3,
                 seed: int = 0, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-3) -> torch.Tensor:
    """Held-out balanced accuracy ``[L, H]`` from ``features [N, L, H, D]`` and per-example function labels."""
    n, n_layers, n_heads, dim = features.shape
    y = torch.tensor([lab == function for lab in labels], dtype=torch.float32)
    if y.sum() < 2 or (1 - y).sum() < 2:
        raise InputError(f"probing {function!r} needs at least two examples of it and two of other functions")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    n_test = max(2, int(round(held_out * n)))
    test, train = order[:n_test], order[n_test:]
    x = features.float().reshape(n, n_layers * n_heads, dim).transpose(0, 1)  # [P, N, D]
    mean = x[:, train].mean(1, keepdim=True)
    std = x[:, train].std(1, keepdim=True) + 1e-6
    x = (x - mean) / std
    w = torch.zeros(n_layers * n_heads, dim, requires_grad=True)
    b = torch.zeros(n_layers * n_heads, requires_grad=True)
    pos_weight = (1 - y[train]).sum() / y[train].sum()
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        logits = torch.einsum("pnd,pd->pn", x[:, train], w) + b[:, None]  # [P, n_train]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y[train].expand_as(logits), pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = (torch.einsum("pnd,pd->pn", x[:, test], w) + b[:, None]) > 0  # [P, n_test]
        truth = y[test].bool()
        tpr = (pred & truth).sum(1).float() / truth.sum().clamp(min=1)
        tnr = (~pred & ~truth).sum(1).float() / (~truth).sum().clamp(min=1)
        return ((tpr + tnr) / 2).view(n_layers, n_heads)


def fit_softmax_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int, weight_decay: float,
                      seed: int = 0, lr: float = 0.05) -> torch.nn.Linear:
    """A multinomial logistic probe ``[D] -> n_classes`` trained on ``x [N, D]`` (standardised by the caller)
    and labels ``y [N]``: full-batch Adam for ``steps`` steps. Its initial weights are ``nn.Linear``'s drawn
    after ``torch.manual_seed(seed)``, inside ``torch.random.fork_rng``: the global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe
