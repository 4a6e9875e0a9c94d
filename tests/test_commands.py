"""The commands' parsers take their defaults and choices from the library, and a config is built from the
parsed arguments by its dataclass fields: parsing nothing gives the library's default config."""

from __future__ import annotations

import dataclasses

import heads.flow
import heads.intervene
import heads.locate
from heads import _cli
from vlmheads.flow.run import FlowConfig
from vlmheads.intervene import InterveneConfig
from vlmheads.locate import LOCATE_METHODS, SCREENS, LocateConfig
from vlmheads.methods.batches import METRICS


def _choices(parser, dest):
    return next(a.choices for a in parser._actions if a.dest == dest)


def test_no_options_give_the_library_s_default_config():
    args = heads.locate._parser().parse_args([])
    config = heads.locate._config(args)
    rendering = _cli.model_rendering("organism")
    expected = LocateConfig(rendering=rendering)
    assert dataclasses.replace(config, function=expected.function) == expected  # --function spatial by default
    args = heads.flow._parser().parse_args([])
    assert _cli.config_from(FlowConfig, args, probes=True, rollout=True) == FlowConfig(rendering=rendering)
    args = heads.intervene._parser().parse_args([])
    assert args.batch_size == InterveneConfig.batch_size


def test_choices_are_the_registries():
    parser = heads.locate._parser()
    assert _choices(parser, "metric") == METRICS and _choices(parser, "screen") == SCREENS
    assert set(_choices(parser, "select_by")) == {s for m in LOCATE_METHODS.values() for s in m.selectable}


def test_a_field_comes_from_given_then_the_arguments_then_its_default():
    args = heads.locate._parser().parse_args(["--n", "7", "--top-k", "2"])
    config = _cli.config_from(LocateConfig, args, n=9)
    assert (config.n, config.top_k, config.max_auto_k) == (9, 2, None)
