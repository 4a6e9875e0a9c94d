"""ModelSpec: the model options as one value, from the command line or a run's config to the loaded model."""

from __future__ import annotations

from argparse import Namespace

import pytest

from vlmheads.errors import UserError
from vlmheads.models.spec import ModelSpec


def test_a_spec_is_read_from_parsed_options_or_from_a_config_and_fills_the_config():
    from heads._cli import config_from
    from vlmheads.locate import LocateConfig

    args = Namespace(model="organism-competent", device="cpu", dtype="float32", device_map=None, max_memory=None,
                     attn_implementation="eager", threads=1, allow_random_init=False, n=4)
    spec = ModelSpec.of(args)
    assert spec == ModelSpec(model="organism-competent", dtype="float32", attn_implementation="eager", threads=1)
    config = config_from(LocateConfig, args, spec)
    assert ModelSpec.of(config) == spec and config.n == 4
    assert {k: getattr(config, k) for k in spec.options()} == spec.options()


@pytest.mark.parametrize("spec, message", [
    (ModelSpec(device="tpu"), "tpu"),
    (ModelSpec(dtype="float8"), "float8"),
    (ModelSpec(max_memory="0=10GiB"), "--max-memory caps what --device-map places"),
    (ModelSpec(attn_implementation="magic"), "unknown --attn-implementation 'magic'"),
    (ModelSpec(threads=0), "--threads must be at least 1"),
    (ModelSpec(model="./no/such/model"), "no/such/model"),
])
def test_check_refuses_bad_options_without_reading_any_weights(spec, message, monkeypatch):
    import vlmheads.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("check() loaded a model"))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        spec.check()


def test_check_then_load_gives_the_model_and_the_thread_choice():
    spec = ModelSpec(model="organism", threads=1)
    spec.check()
    assert spec.declared_geometry() == (spec.load()[0].geometry.n_layers, spec.load()[0].geometry.n_heads)
    loaded, threads = spec.load()
    assert threads == {"threads": 1, "chosen_by": "--threads"} and loaded.name.endswith("organism")
