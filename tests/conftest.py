"""Shared fixtures: tiny random VLMs of every family (MHA and GQA) and the shipped organisms."""

from __future__ import annotations

import os

import pytest
import torch

from vlmheads.models import wrap_model
from vlmheads.testing import TINY_BUILDERS

FAMILIES = tuple(TINY_BUILDERS)

# every command run in the suite (in this process or a child) uses torch's default thread count, as the
# curated runs did: the automatic choice from the load average would differ from run to run
os.environ.setdefault("VLMHEADS_THREADS", str(torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_models():
    """{(family, gqa): (LoadedModel, inputs)}, built once per session."""
    cache = {}

    def get(family: str, gqa: bool = True):
        key = (family, gqa)
        if key not in cache:
            model, inputs, processor = TINY_BUILDERS[family](gqa=gqa)
            cache[key] = (wrap_model(model, processor, name=f"tiny-{family}"), inputs)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def organism():
    """The competent organism (clean images, every function at ceiling): the clean case the method tests
    were written for. The default organism fails for the prior's sake: ``prior_organism``."""
    from vlmheads.models import load_model

    return load_model("organism-competent")


@pytest.fixture(scope="session")
def prior_organism():
    """The default organism: a strong prior and weakened images (the AdaptVis setting)."""
    from vlmheads.models import load_model

    return load_model("organism")


@pytest.fixture
def ctrl_c_at(monkeypatch):
    """``ctrl_c_at(owner, name, n)``: ``owner.name`` raises KeyboardInterrupt on its ``n``-th call (the calls
    before run the real function); returns the list of each call's positional arguments."""
    def install(owner, name: str, n: int) -> list:
        real, calls = getattr(owner, name), []

        def then_ctrl_c(*args, **kwargs):
            calls.append(args)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, then_ctrl_c)
        return calls
    return install
